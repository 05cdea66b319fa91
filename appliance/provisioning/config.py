"""The provisioner's one TOML file, through the house schema (:mod:`appliance.schema`).

Example (every key of ``[provisioner]`` optional)::

    [provisioner]
    listen = "127.0.0.1:8470"
    public_url = "https://phones.example.com"   # base of verification_uri;
                                      # default: http://<the address bound>
    database = "/var/lib/appliance-provisioner/phones.db"
    token_ttl = 3600                  # Access Token lifetime, s (15..86400)
    device_code_ttl = 600             # RFC 8628 expires_in, s
    poll_interval = 5                 # RFC 8628 interval, s
    tls_cert_file = "cert.pem"        # serve HTTPS (certificate chain, PEM)
    tls_key_file = "key.pem"          # its private key, 0600

    [twilio]
    account_sid = "AC…"
    api_key_sid = "SK…"
    api_key_secret_file = "/etc/appliance-provisioner/api-key-secret"
    outgoing_application_sid = "AP…"  # optional: the TwiML App

    [admin]
    password_hash_file = "/etc/appliance-provisioner/admin-password"

Secrets never sit in the TOML file: the API key secret and the admin password
hash (``appliance provisioner hash-password`` makes one) are read from the
named files, which must be 0600 (no group or other bits), or from the
environment (:data:`API_SECRET_ENV`, :data:`ADMIN_HASH_ENV`), which wins.
Relative paths are relative to the TOML file.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Secret
from appliance.errors import ConfigError
from appliance.exchange.config import parse_listen, validate_sid
from appliance.schema import Problems, register, structure
from appliance.tokens import MAX_LIFETIME_S

__all__ = [
    "ADMIN_HASH_ENV",
    "API_SECRET_ENV",
    "ProvisionerConfig",
    "load_provisioner_config",
    "read_secret_file",
]

API_SECRET_ENV = "APPLIANCE_PROVISIONER_API_SECRET"
ADMIN_HASH_ENV = "APPLIANCE_PROVISIONER_ADMIN_HASH"


@dataclass(frozen=True)
class _ServerSection:
    listen: str = "127.0.0.1:8470"
    public_url: str = ""
    database: str = "/var/lib/appliance-provisioner/phones.db"
    token_ttl: int = 3600
    device_code_ttl: int = 600
    poll_interval: int = 5
    tls_cert_file: str = ""
    tls_key_file: str = ""


@dataclass(frozen=True)
class _TwilioSection:
    account_sid: str
    api_key_sid: str
    api_key_secret_file: str = ""
    outgoing_application_sid: str = ""


@dataclass(frozen=True)
class _AdminSection:
    password_hash_file: str = ""


@dataclass(frozen=True)
class _File:
    twilio: _TwilioSection
    provisioner: _ServerSection = _ServerSection()
    admin: _AdminSection = _AdminSection()


def _ranged(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return check


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


register(
    _ServerSection,
    {
        "token_ttl": _ranged(15, MAX_LIFETIME_S),
        "device_code_ttl": _ranged(60, 3600),
        "poll_interval": _ranged(1, 60),
        "public_url": _url,
    },
)
register(_TwilioSection)
register(_AdminSection)
register(_File)


@dataclass(frozen=True)
class ProvisionerConfig:
    """The validated configuration, secrets held as :class:`Secret`."""

    host: str
    port: int
    public_url: str
    database: Path
    token_ttl: int
    device_code_ttl: int
    poll_interval: int
    account_sid: str
    api_key_sid: str
    api_key_secret: Secret
    outgoing_application_sid: str | None
    admin_password_hash: Secret
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


def read_secret_file(path: Path, key: str) -> Secret:
    """Read a secret from a file only its owner can read.

    Raises:
        ConfigError: missing, empty or group/world-accessible file (naming ``key``).
    """
    try:
        info = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(key, f"{path} must not be accessible by others (chmod 600)")
    if not text:
        raise ConfigError(key, f"{path} is empty")
    return Secret(text)


def _secret(env: str, file: str, base: Path, key: str) -> Secret:
    value = os.environ.get(env)
    if value:
        return Secret(value)
    if not file:
        raise ConfigError(key, f"required (or set {env})")
    return read_secret_file(base / file, key)


def load_provisioner_config(path: Path, *, secrets: bool = True) -> ProvisionerConfig:
    """Read and validate the provisioner's TOML file.

    With ``secrets=False`` (the admin commands, which only need the database)
    the secret files are not read and the secrets are empty.

    Raises:
        ConfigError: every problem, each naming ``section.key``.
    """
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    parsed = structure(raw, _File)
    problems = Problems()
    server, twilio = parsed.provisioner, parsed.twilio
    base = path.parent
    host, port = "127.0.0.1", 0
    sids = [
        ("twilio.account_sid", twilio.account_sid, "AC"),
        ("twilio.api_key_sid", twilio.api_key_sid, "SK"),
    ]
    if twilio.outgoing_application_sid:
        sids.append(
            ("twilio.outgoing_application_sid", twilio.outgoing_application_sid, "AP")
        )
    for key, value, prefix in sids:
        try:
            validate_sid(value, prefix, key)
        except ConfigError as exc:
            problems.extend(exc)
    try:
        host, port = parse_listen(server.listen, "provisioner.listen")
    except ConfigError as exc:
        problems.extend(exc)
    found: list[Secret] = []
    for env, file, key in (
        (API_SECRET_ENV, twilio.api_key_secret_file, "twilio.api_key_secret_file"),
        (ADMIN_HASH_ENV, parsed.admin.password_hash_file, "admin.password_hash_file"),
    ):
        if not secrets:
            found.append(Secret(""))
            continue
        try:
            found.append(_secret(env, file, base, key))
        except ConfigError as exc:
            problems.extend(exc)
    tls = (server.tls_cert_file, server.tls_key_file)
    if any(tls) and not all(tls):
        problems.add("provisioner.tls_key_file", "set both TLS files or neither")
    elif all(tls) and secrets:
        try:
            read_secret_file(base / server.tls_key_file, "provisioner.tls_key_file")
        except ConfigError as exc:
            problems.extend(exc)
    problems.check()
    if secrets and not found[1].reveal().startswith("scrypt$"):
        raise ConfigError(
            "admin.password_hash_file",
            "not a password hash (make one with 'appliance provisioner hash-password')",
        )
    return ProvisionerConfig(
        host=host,
        port=port,
        public_url=server.public_url,
        database=base / server.database,
        token_ttl=server.token_ttl,
        device_code_ttl=server.device_code_ttl,
        poll_interval=server.poll_interval,
        account_sid=twilio.account_sid,
        api_key_sid=twilio.api_key_sid,
        api_key_secret=found[0],
        outgoing_application_sid=twilio.outgoing_application_sid or None,
        admin_password_hash=found[1],
        tls_cert_file=base / server.tls_cert_file if server.tls_cert_file else None,
        tls_key_file=base / server.tls_key_file if server.tls_key_file else None,
    )
