"""``appliance provisioner ...``: run the token service and administer its phones.

* ``serve --config FILE``: run until SIGINT/SIGTERM; prints ``provisioner
  listening on URL`` once bound.
* ``phones``, ``rename SID NAME``, ``revoke SID`` (``--config FILE``): the
  same database as the running service; a revoked phone's next token
  request gets 403 ``phone_revoked``.
* ``make-signing-key KEYFILE``, ``make-usb ...``: USB-stick provisioning
  (:mod:`.usb`): the Ed25519 key, and a signed file enrolling one phone,
  optionally with the provisioner's CA or key pin and a Wi-Fi network (its
  passphrase read from a 0600 file, never from the command line).
* ``hash-password``: reads the admin password from standard input (never
  from the command line, where ``ps`` would show it) and prints its scrypt
  hash for ``admin.password_hash_file``.

``appliance provision status|reset`` is for the person at the phone.
``status`` shows which provisioner it uses, whether it holds a device
credential and for which identity (never the credential itself) and, from
the running service (:mod:`.control`), the phase and when the token
expires. ``reset`` asks the running service to forget the credential; the
panel asks too, and only holding Hangup there for 3 s performs it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError, ProvisioningError
from appliance.log import configure_logging
from appliance.system.control import DEFAULT_SOCKET

__all__ = ["add_provision_parser", "add_provisioner_parser"]


def _fail(message: str, status: int = 2) -> int:
    sys.stderr.write(f"appliance: error: {message}\n")
    return status


def add_provisioner_parser(subparsers: Any) -> None:
    """Add ``appliance provisioner`` and its commands."""
    parser = subparsers.add_parser(
        "provisioner",
        help="the token service: enroll phones by QR code, mint Access Tokens",
        description="Enroll phones (RFC 8628 device authorization grant) and "
        "give enrolled phones short-lived Access Tokens.",
    )
    commands = parser.add_subparsers(dest="provisioner_command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", type=Path, required=True, metavar="FILE")
    serve.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    serve.set_defaults(handler=_serve)

    phones = commands.add_parser("phones", help="list the enrolled phones")
    phones.add_argument("--config", type=Path, required=True, metavar="FILE")
    phones.set_defaults(handler=_phones)

    rename = commands.add_parser("rename", help="change a phone's directory name")
    rename.add_argument("--config", type=Path, required=True, metavar="FILE")
    rename.add_argument("sid", help="PH…")
    rename.add_argument("name")
    rename.set_defaults(handler=_rename)

    revoke = commands.add_parser("revoke", help="revoke a phone: no more tokens")
    revoke.add_argument("--config", type=Path, required=True, metavar="FILE")
    revoke.add_argument("sid", help="PH…")
    revoke.set_defaults(handler=_revoke)

    keygen = commands.add_parser(
        "make-signing-key",
        help="make the Ed25519 key USB provisioning files are signed with",
        description="Write the private key (PEM, 0600) to KEYFILE and print "
        "the public key (PEM) for the phone image (phone.usb_public_key_file).",
    )
    keygen.add_argument("keyfile", type=Path)
    keygen.set_defaults(handler=_make_signing_key)

    make_usb = commands.add_parser(
        "make-usb",
        help="enroll a phone and write its signed provisioning file for a stick",
        description="Enroll IDENTITY and write appliance-provisioning.json "
        "(0600) into DIR, the root of a USB stick. The file holds the device "
        "credential: keep the stick like a key.",
    )
    make_usb.add_argument("--config", type=Path, required=True, metavar="FILE")
    make_usb.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    make_usb.add_argument("--identity", required=True)
    make_usb.add_argument("--name", default="", help="directory name")
    make_usb.add_argument(
        "--device-id",
        default="",
        help="bind to one phone: its board serial, DMI UUID or machine id",
    )
    make_usb.add_argument("--valid-hours", type=float, default=72.0, help="default 72")
    make_usb.add_argument(
        "--ca-file",
        type=Path,
        metavar="PEM",
        help="the CA the phone trusts the provisioner through (instead of its own)",
    )
    make_usb.add_argument(
        "--pin", default="", help="pin the provisioner's key: sha256/<base64>"
    )
    make_usb.add_argument(
        "--pin-cert",
        type=Path,
        metavar="PEM",
        help="pin the key of this certificate (the provisioner's tls_cert_file)",
    )
    make_usb.add_argument("--wifi-ssid", default="", help="Wi-Fi network to join")
    make_usb.add_argument(
        "--wifi-psk-file",
        type=Path,
        metavar="FILE",
        help="file (0600) holding the Wi-Fi passphrase; never on the command line",
    )
    make_usb.add_argument("--out", type=Path, required=True, metavar="DIR")
    make_usb.set_defaults(handler=_make_usb)

    hash_password = commands.add_parser(
        "hash-password", help="hash the admin password read from standard input"
    )
    hash_password.set_defaults(handler=_hash_password)


def add_provision_parser(subparsers: Any) -> None:
    """Add ``appliance provision status``: the phone's provisioning state."""
    parser = subparsers.add_parser(
        "provision",
        help="this phone's provisioning state",
        description="Show how this phone gets its identity and tokens.",
    )
    commands = parser.add_subparsers(dest="provision_command", metavar="COMMAND")
    commands.required = True
    status = commands.add_parser("status", help="provisioner, identity, token expiry")
    status.add_argument("--config", action="append", type=Path, metavar="FILE")
    status.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, metavar="PATH")
    status.set_defaults(handler=_provision_status)
    reset = commands.add_parser(
        "reset",
        help="forget this phone's identity (confirmed on the panel)",
        description="Ask the running phone service to remove the device "
        "credential. The phone's screen asks too: hold Hangup for 3 s there "
        "to confirm. Nothing is kept: enrolling again needs a new approval.",
    )
    reset.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, metavar="PATH")
    reset.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait (default 60)"
    )
    reset.set_defaults(handler=_provision_reset)


def _provision_status(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.provisioning.credential import load_credential

    try:
        for path in args.config or ():
            if not path.exists():  # as ``appliance run --config``
                raise ConfigError("--config", f"{path}: no such file")
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    out = sys.stdout
    if config.provisioner_url is None:
        out.write("provisioner: none (manual token file)\n")
        out.write(f"token file: {config.token_file}\n")
        return 0
    out.write(f"provisioner: {config.provisioner_url}\n")
    out.write(f"credential file: {config.credential_file}\n")
    try:
        stored = load_credential(config.credential_file)
    except ProvisioningError as exc:
        out.write(f"state: unusable credential: {exc}\n")
        return 1
    if stored is None:
        out.write("state: waiting for provisioning (no credential yet)\n")
    else:
        out.write(f"state: provisioned as {stored.identity}\n")
        sid = stored.credential.partition(".")[0]
        out.write(f"phone: {sid} (from {stored.provisioner})\n")
        if stored.pin:
            out.write(f"provisioner key pinned: {stored.pin}\n")
    _service_status(args.socket)
    return 0


def _service_status(path: Path) -> None:
    from appliance.provisioning.control import ask

    out = sys.stdout
    try:
        answer = ask(path, "status")
    except ProvisioningError:
        out.write(f"service: not reachable at {path}\n")
        return
    out.write(f"service: {answer.get('phase')}")
    if answer.get("message"):
        out.write(f" ({answer['message']})")
    out.write("\n")
    expires = answer.get("token_expires_at")
    if isinstance(expires, int | float):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        out.write(
            f"token expires: {when} (in {max(0, int(expires - time.time()))} s)\n"
        )
    else:
        out.write("token expires: no token\n")


def _provision_reset(args: argparse.Namespace) -> int:
    from appliance.provisioning.control import ask

    def progress(line: dict[str, Any]) -> None:
        if line.get("state") == "confirm":
            sys.stdout.write("Confirm on the phone: hold HANGUP for 3 seconds.\n")
            sys.stdout.flush()

    try:
        answer = ask(args.socket, "reset", timeout_s=args.timeout, on_line=progress)
    except ProvisioningError as exc:
        return _fail(f"{exc} (is the phone service running?)", 1)
    result = answer.get("result")
    messages = {
        "reset": "Reset: the device credential was removed; the phone enrolls anew.",
        "cancelled": "Not reset: cancelled on the phone (or not confirmed in time).",
        "busy": "Not reset: the phone is busy (a call) or has no provisioning.",
        "no_panel": "Not reset: this phone has no front panel to confirm on.",
        "failed": "Not reset: the credential could not be removed (see the log).",
    }
    sys.stdout.write(messages.get(str(result), f"Not reset: {answer}") + "\n")
    return 0 if result == "reset" else 1


def _serve(args: argparse.Namespace) -> int:
    from appliance.provisioning.config import load_provisioner_config

    try:
        config = load_provisioner_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(args.log_level)
    try:
        asyncio.run(_run(config))
    except (OSError, ProvisioningError) as exc:
        return _fail(f"cannot serve: {exc}", 1)
    return 0


async def _run(config: Any) -> None:
    from appliance.provisioning.server import Provisioner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Provisioner(config) as provisioner:
        sys.stdout.write(f"provisioner listening on {provisioner.url}\n")
        sys.stdout.flush()
        await stop.wait()


def _store(args: argparse.Namespace) -> Any:
    from appliance.provisioning.config import load_provisioner_config
    from appliance.provisioning.store import PhoneStore

    config = load_provisioner_config(args.config, secrets=False)
    return PhoneStore(config.database)


def _phones(args: argparse.Namespace) -> int:
    try:
        phones = _store(args).list()
    except (ConfigError, ProvisioningError) as exc:
        return _fail(str(exc))
    for p in phones:
        state = "revoked" if p.revoked else "active"
        last = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.last_token_at))
            if p.last_token_at
            else "-"
        )
        sys.stdout.write(f"{p.sid}  {p.identity:<20} {state:<8} {last}  {p.name}\n")
    return 0


def _rename(args: argparse.Namespace) -> int:
    try:
        _store(args).rename(args.sid, args.name)
    except (ConfigError, ProvisioningError) as exc:
        return _fail(str(exc))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        _store(args).revoke(args.sid, time.time())
    except (ConfigError, ProvisioningError) as exc:
        return _fail(str(exc))
    return 0


def _make_signing_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(args.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail(f"cannot create {args.keyfile}: {exc.strerror}")
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sys.stdout.write(public.decode())
    return 0


def _make_usb(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.provisioning.config import (
        load_provisioner_config,
        read_secret_file,
    )
    from appliance.provisioning.server import IDENTITY_RE
    from appliance.provisioning.store import PhoneStore
    from appliance.provisioning.usb import FILE_NAME, sign_bundle

    try:
        config = load_provisioner_config(args.config, secrets=False)
        if not config.public_url:
            raise ConfigError(
                "provisioner.public_url", "required for USB files (the phones' URL)"
            )
        if not IDENTITY_RE.fullmatch(args.identity):
            raise ConfigError("--identity", "letters, digits, _ . @ - (up to 121)")
        if not 0 < args.valid_hours <= 24 * 90:
            raise ConfigError("--valid-hours", "must be between 0 and 2160")
        pem = read_secret_file(args.key, "--key").reveal().encode()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except ValueError as exc:
            raise ConfigError("--key", "not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("--key", "not an Ed25519 key")
        extras = _usb_extras(args)
        now = time.time()
        credential = PhoneStore(config.database).enroll(args.identity, args.name, now)
    except (ConfigError, ProvisioningError) as exc:
        return _fail(str(exc))
    data = sign_bundle(
        key,
        provisioner_url=config.public_url,
        identity=args.identity,
        credential=str(credential),
        expires_at=now + args.valid_hours * 3600,
        device_id=args.device_id,
        **extras,
    )
    target = args.out / FILE_NAME
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        return _fail(f"cannot write {target}: {exc.strerror}", 1)
    sys.stdout.write(f"{credential.sid} enrolled as {args.identity}; wrote {target}\n")
    return 0


def _usb_extras(args: argparse.Namespace) -> dict[str, Any]:
    """The optional parts of a USB file: CA, pin, Wi-Fi (checked here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from appliance.provisioning.config import read_secret_file
    from appliance.provisioning.trust import check_ca_pem, parse_pin, spki_pin
    from appliance.provisioning.wifi import WifiNetwork, derive_psk

    extras: dict[str, Any] = {}
    try:
        if args.ca_file is not None:
            extras["ca_pem"] = check_ca_pem(args.ca_file.read_text())
        if args.pin and args.pin_cert is not None:
            raise ConfigError("--pin", "give --pin or --pin-cert, not both")
        if args.pin:
            extras["pin"] = parse_pin(args.pin)
        elif args.pin_cert is not None:
            cert = x509.load_pem_x509_certificate(args.pin_cert.read_bytes())
            extras["pin"] = spki_pin(cert.public_bytes(serialization.Encoding.DER))
    except (OSError, ValueError) as exc:
        raise ConfigError("--ca-file/--pin-cert", str(exc)) from exc
    if bool(args.wifi_ssid) != (args.wifi_psk_file is not None):
        raise ConfigError("--wifi-ssid", "give both --wifi-ssid and --wifi-psk-file")
    if args.wifi_ssid:
        passphrase = read_secret_file(args.wifi_psk_file, "--wifi-psk-file").reveal()
        psk = derive_psk(args.wifi_ssid, passphrase)
        extras["wifi"] = WifiNetwork(args.wifi_ssid, psk)
    return extras


def _hash_password(args: argparse.Namespace) -> int:
    from appliance.provisioning.grant import hash_secret

    if sys.stdin.isatty():
        password = getpass.getpass("admin password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        return _fail("the password must have at least 8 characters")
    sys.stdout.write(hash_secret(password) + "\n")
    return 0
