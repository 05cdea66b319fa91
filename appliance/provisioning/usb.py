"""USB-stick provisioning: a signed file that hands a phone its credential.

``appliance provisioner make-usb`` enrolls a phone and writes
:data:`FILE_NAME` for the root of a stick::

    {"payload": "<base64 of a JSON object>", "signature": "<base64>"}

The payload (version 1) holds ``provisioner_url``, ``identity``,
``credential`` (the device credential), ``expires_at`` (Unix seconds) and,
optionally, ``device_id`` (the phone it is bound to: its board serial, see
:data:`appliance.provisioning.phone.DEVICE_ID_FILES`),
``ca_pem`` and/or ``pin`` (how to recognise the provisioner's certificate,
:mod:`.trust`) and ``wifi`` (``{"ssid", "psk"}``, the PSK as the 64 hex
digits wpa_supplicant uses, derived from the passphrase by ``make-usb``;
:mod:`.wifi`).
The signature is Ed25519 (RFC 8032) over the payload bytes exactly as
stored, by the provisioner's signing key; the phone image carries the public
half (``phone.usb_public_key_file``).

The image mounts sticks read-only, ``nosuid,nodev,noexec``, at
``phone.usb_dir``; the phone looks for the file there every
:data:`POLL_S` seconds. Nothing on the stick is ever run: the file is opened
with ``O_NOFOLLOW`` (no symlinks), must be a regular file of at most
:data:`MAX_SIZE` bytes, and only its JSON is read. Any problem (bad JSON, bad
signature, expired, another phone, another provisioner, a stick pulled
mid-read) is a :class:`UsbFileError` with a short message for the OLED; the
credential in use is replaced only by a file that passed every check.

:func:`sign_bundle` and :func:`verify_bundle` are pure (bytes and time in);
:func:`read_stick` and :func:`stick_file` do the file I/O.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.errors import ProvisioningError
from appliance.provisioning.trust import MAX_CA_PEM, check_ca_pem, parse_pin
from appliance.provisioning.wifi import WifiNetwork, parse_wifi

__all__ = [
    "CODES",
    "FILE_NAME",
    "MAX_SIZE",
    "POLL_S",
    "UsbBundle",
    "UsbFileError",
    "load_public_key",
    "read_stick",
    "sign_bundle",
    "stick_file",
    "verify_bundle",
]

FILE_NAME = "appliance-provisioning.json"
MAX_SIZE = 16 * 1024
POLL_S = 2.0


#: The code of each refusal (:mod:`appliance.errors`): the signature is an
#: authentication failure, expiry is a token's, the binding an authorization's,
#: a stick gone mid-read a transport's; anything else is a malformed file.
CODES = {
    "Bad signature": 20151,
    "USB file expired": 20104,
    "For another phone": 31201,
    "Other provisioner": 31201,
    "USB read error": 31009,
}


class UsbFileError(ProvisioningError):
    """A provisioning file was refused; ``short`` fits the OLED, ``code``
    comes from :data:`CODES` (31400 for a malformed file)."""

    def __init__(self, short: str, detail: str = "") -> None:
        super().__init__(
            f"{short}: {detail}" if detail else short, code=CODES.get(short, 31400)
        )
        self.short = short


@dataclass(frozen=True)
class UsbBundle:
    """A verified provisioning file."""

    provisioner_url: str
    identity: str
    credential: str
    expires_at: float
    device_id: str
    ca_pem: str = ""
    pin: str = ""
    wifi: WifiNetwork | None = None

    def __repr__(self) -> str:
        return f"UsbBundle(identity={self.identity!r}, credential='********')"


def sign_bundle(
    key: Ed25519PrivateKey,
    *,
    provisioner_url: str,
    identity: str,
    credential: str,
    expires_at: float,
    device_id: str = "",
    ca_pem: str = "",
    pin: str = "",
    wifi: WifiNetwork | None = None,
) -> bytes:
    """The file's bytes, signed with the provisioner's key."""
    fields: dict[str, Any] = {
        "version": 1,
        "provisioner_url": provisioner_url,
        "identity": identity,
        "credential": credential,
        "expires_at": expires_at,
        "device_id": device_id,
    }
    if ca_pem:
        fields["ca_pem"] = ca_pem
    if pin:
        fields["pin"] = pin
    if wifi is not None:
        fields["wifi"] = {"ssid": wifi.ssid, "psk": wifi.psk}
    payload = json.dumps(fields, separators=(",", ":")).encode()
    document = {
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(key.sign(payload)).decode(),
    }
    return json.dumps(document).encode()


def _field(
    payload: dict[str, Any], key: str, *, required: bool = True, limit: int = 1024
) -> str:
    value = payload.get(key, "")
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise UsbFileError("Bad USB file", f"{key} missing or invalid")
    return value


def verify_bundle(
    data: bytes,
    public_key: Ed25519PublicKey,
    *,
    now: float,
    device_id: str,
    provisioner_url: str | None,
) -> UsbBundle:
    """Check a file's signature, expiry, device binding and provisioner.

    Args:
        now: Unix time (``expires_at`` is absolute).
        device_id: this phone's id.
        provisioner_url: the provisioner this phone is configured for;
            ``None`` for a phone configured with none, which takes the
            file's (signed, so as trustworthy as the rest of it).

    Raises:
        UsbFileError: what is wrong, the signature checked before anything
            in the payload is trusted.
    """
    try:
        document = json.loads(data)
        payload_bytes = base64.b64decode(document["payload"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise UsbFileError("Bad USB file", "not a provisioning file") from exc
    try:
        public_key.verify(signature, payload_bytes)
    except InvalidSignature:
        raise UsbFileError("Bad signature", "not signed by our provisioner") from None
    try:
        payload = json.loads(payload_bytes)
    except ValueError as exc:
        raise UsbFileError("Bad USB file", "payload is not JSON") from exc
    if not isinstance(payload, dict) or payload.get("version") != 1:
        raise UsbFileError("Bad USB file", "unknown version")
    expires_at = payload.get("expires_at")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise UsbFileError("Bad USB file", "expires_at missing")
    if now >= expires_at:
        raise UsbFileError("USB file expired")
    bound = _field(payload, "device_id", required=False)
    if bound and bound != device_id:
        raise UsbFileError("For another phone", f"bound to {bound}")
    url = _field(payload, "provisioner_url")
    if not url.startswith(("http://", "https://")):
        raise UsbFileError("Bad USB file", "provisioner_url is not a web address")
    if provisioner_url is not None and url.rstrip("/") != provisioner_url.rstrip("/"):
        raise UsbFileError("Other provisioner", url)
    try:
        ca_pem = _field(payload, "ca_pem", required=False, limit=MAX_CA_PEM)
        ca_pem = check_ca_pem(ca_pem) if ca_pem else ""
        pin = _field(payload, "pin", required=False)
        pin = parse_pin(pin) if pin else ""
        wifi = parse_wifi(payload["wifi"]) if "wifi" in payload else None
    except ProvisioningError as exc:
        raise UsbFileError("Bad USB file", str(exc)) from exc
    return UsbBundle(
        url,
        _field(payload, "identity"),
        _field(payload, "credential"),
        float(expires_at),
        bound,
        ca_pem,
        pin,
        wifi,
    )


def stick_file(directory: Path) -> tuple[int, int] | None:
    """Which file is on the stick: its ``(mtime_ns, size)``, not following a
    symlink, or ``None`` when there is none. The same pair at the same path
    is the same insertion (the phone reads and reports it once).

    Raises:
        UsbFileError: the directory cannot be read (the stick was pulled).
    """
    try:
        info = os.lstat(directory / FILE_NAME)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsbFileError("USB read error", exc.strerror or "") from exc
    return info.st_mtime_ns, info.st_size


def read_stick(directory: Path) -> bytes | None:
    """The provisioning file's bytes, or ``None`` when there is none.

    Raises:
        UsbFileError: a symlink, a device or other non-regular file, a file
            too large, or a read error (the stick was pulled).
    """
    path = directory / FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsbFileError("Bad USB file", "is a symlink") from exc
        raise UsbFileError("USB read error", exc.strerror or "") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsbFileError("Bad USB file", "not a regular file")
        if info.st_size > MAX_SIZE:
            raise UsbFileError("Bad USB file", "too large")
        chunks = []
        total = 0
        while chunk := os.read(fd, 4096):
            total += len(chunk)
            if total > MAX_SIZE:
                raise UsbFileError("Bad USB file", "too large")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UsbFileError("USB read error", exc.strerror or "") from exc
    finally:
        os.close(fd)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The provisioner's public key (PEM) the image carries.

    Raises:
        ProvisioningError: unreadable, or not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"cannot read the USB key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ProvisioningError(f"{path} is not an Ed25519 public key")
    return key
