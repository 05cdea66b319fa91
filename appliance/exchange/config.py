"""Configuration of the local exchange: command-line values and/or a TOML file.

File format (every key optional; unknown keys are errors)::

    [exchange]
    listen = "127.0.0.1:8080"          # HOST:PORT; port 0 = any free port
    ring_timeout = 30                  # seconds
    heartbeat_interval = 5             # seconds, below the SDK's 15 s timeout
    idle_timeout = 60                  # seconds; omit to disable
    resume_grace = 30                  # seconds a call is held for a dropped
                                       # party whose listen has no
                                       # reconnectTimeout (0-30; 0 = none)
    media_addresses = ["127.0.0.1"]    # addresses echo media may use
    gateway_name = "local-exchange"
    max_sessions_per_account = 10000   # capacity limits, each answered with
    max_sessions_per_identity = 20     # 31206 and logged once per party
    max_calls_per_session = 4          # (appliance/exchange/quotas.py)
    max_echo_calls = 8
    max_pending_per_address = 64       # sockets not yet past listen

    [[accounts]]
    sid = "AC0123…"                    # AC + 32 hex
    auth_token = "…"                   # optional; verifies Capability Tokens

    [[accounts.api_keys]]
    sid = "SK0123…"                    # SK + 32 hex
    secret = "…"

Command-line values override the file's ``[exchange]`` values; credentials
given beside the file (``--api-key`` with its secret from a file or the
environment) are added to the file's accounts.

Secrets never come from the command line, where every user sees them in
``ps``: a file with ``[[accounts]]`` holds secrets, so it must be private to
its owner (mode 0600) or it is refused, as is a secret file
(:func:`appliance.files.read_private`). The file goes through the same
schema mechanism as the phone's configuration (:mod:`appliance.schema`): one
:class:`~appliance.errors.ConfigError` lists every problem, each naming its key
(``exchange.ring_timeout``, ``accounts[0].sid``), unknown keys with a "did you
mean" hint, and values are strictly typed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.exchange.quotas import Quotas
from appliance.exchange.resume import (
    DEFAULT_RECONNECT_TIMEOUT_S,
    MAX_RECONNECT_TIMEOUT_S,
)
from appliance.files import check_private
from appliance.schema import Problems, register, structure
from appliance.tokens import Keyring

__all__ = [
    "DEFAULT_GATEWAY_NAME",
    "ExchangeConfig",
    "build_config",
    "is_loopback",
    "load_config_file",
    "parse_listen",
    "validate_sid",
]

DEFAULT_GATEWAY_NAME = "local-exchange"
_SID = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class ExchangeConfig:
    """Everything the exchange server needs.

    Attributes:
        host: address to listen on.
        port: TCP port; 0 picks a free one.
        keyring: accounts, API keys and Auth Tokens tokens are checked against.
        ring_timeout: seconds before an unanswered call fails with 31480.
        heartbeat_interval: seconds between keepalives (0 < x < 15).
        idle_timeout: close sessions silent this long (clients echo every
            heartbeat, so 30 s is six missed echoes); ``None`` = never.
        media_addresses: local addresses for echo media; ``None`` = all.
        gateway_name: reported in ``connected.gateway``.
        quotas: capacity limits (:class:`~appliance.exchange.quotas.Quotas`).
        resume_grace: whole seconds (0-30) an answered call is held for a
            party whose socket drops, when its ``listen`` has no
            ``reconnectTimeout`` (:mod:`appliance.exchange.resume`).
    """

    host: str = "127.0.0.1"
    port: int = 0
    keyring: Keyring = field(default_factory=Keyring)
    ring_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    idle_timeout: float | None = 30.0
    media_addresses: tuple[str, ...] | None = None
    gateway_name: str = DEFAULT_GATEWAY_NAME
    quotas: Quotas = field(default_factory=Quotas)
    resume_grace: int = DEFAULT_RECONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        problems = Problems()
        for key, check in (
            ("heartbeat_interval", _heartbeat),
            ("ring_timeout", _positive),
            ("idle_timeout", _optional_positive),
            ("media_addresses", _addresses),
            ("resume_grace", _grace),
        ):
            try:
                check(getattr(self, key))
            except ValueError as exc:
                problems.add(key, str(exc))
        if not 0 <= self.port <= 65535:
            problems.add("listen", f"port {self.port} is out of range")
        problems.check()

    @property
    def effective_media_addresses(self) -> tuple[str, ...] | None:
        """Media addresses, defaulting to 127.0.0.1 when listening on loopback."""
        if self.media_addresses is not None:
            return self.media_addresses
        if is_loopback(self.host):
            return ("127.0.0.1",)
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_sid(value: object, prefix: str, key: str) -> str:
    """Check a Twilio SID: ``prefix`` + 32 hex digits.

    Raises:
        ConfigError: naming ``key``.
    """
    if (
        not isinstance(value, str)
        or not value.startswith(prefix)
        or not _SID.fullmatch(value[len(prefix) :])
    ):
        raise ConfigError(
            key, f"expected {prefix} followed by 32 hex digits, got {value!r}"
        )
    return value


def parse_listen(text: str, key: str = "listen") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6).

    Raises:
        ConfigError: naming ``key``.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(key, f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _heartbeat(value: object) -> float:
    number = _number(value)
    if not 0 < number < 15:
        raise ValueError("must be between 0 and 15 seconds (exclusive)")
    return number


def _positive(value: object) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _optional_positive(value: object) -> float | None:
    return None if value is None else _positive(value)


def _addresses(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ValueError("expected an array")
    for address in value:
        try:
            ipaddress.ip_address(_string(address))
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address") from None
    return tuple(value)


def _string(value: object, key: str = "") -> str:
    if not isinstance(value, str) or not value:
        if key:
            raise ConfigError(key, f"expected a non-empty string, got {value!r}")
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    return value


def _grace(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected whole seconds, got {value!r}")
    if not 0 <= value <= MAX_RECONNECT_TIMEOUT_S:
        raise ValueError(f"must be 0 to {MAX_RECONNECT_TIMEOUT_S} seconds")
    return value


def _listen(value: object) -> tuple[str, int]:
    return parse_listen(_string(value), "")


# --- the file's schema (every key optional except the credentials' sids) ---------


@dataclass(frozen=True)
class _ExchangeSection:
    listen: tuple[str, int] | None = None
    ring_timeout: float | None = None
    heartbeat_interval: float | None = None
    idle_timeout: float | None = None
    media_addresses: tuple[str, ...] | None = None
    gateway_name: str | None = None
    resume_grace: int | None = None
    max_sessions_per_account: int | None = None
    max_sessions_per_identity: int | None = None
    max_calls_per_session: int | None = None
    max_echo_calls: int | None = None
    max_pending_per_address: int | None = None


_QUOTA_KEYS = tuple(f.name for f in fields(Quotas))


@dataclass(frozen=True)
class _ApiKeyEntry:
    sid: str
    secret: str


@dataclass(frozen=True)
class _AccountEntry:
    sid: str
    auth_token: str | None = None
    api_keys: tuple[_ApiKeyEntry, ...] = ()


@dataclass(frozen=True)
class _ExchangeFile:
    exchange: _ExchangeSection = field(default_factory=_ExchangeSection)
    accounts: tuple[_AccountEntry, ...] = ()


register(
    _ExchangeSection,
    {
        "listen": _listen,
        "ring_timeout": _positive,
        "heartbeat_interval": _heartbeat,
        "idle_timeout": _optional_positive,
        "media_addresses": _addresses,
        "gateway_name": _string,
        "resume_grace": _grace,
        **dict.fromkeys(_QUOTA_KEYS, _count),
    },
)
register(
    _ApiKeyEntry,
    {"sid": lambda v: validate_sid(v, "SK", ""), "secret": _string},
)
register(
    _AccountEntry,
    {"sid": lambda v: validate_sid(v, "AC", ""), "auth_token": _string},
)
register(_ExchangeFile)


def load_config_file(path: Path) -> ExchangeConfig:
    """Read an exchange TOML file (format in the module docstring).

    Raises:
        ConfigError: unreadable file, bad TOML or accounts in a file others
            may read (key ``config``), or every invalid key of the file.
    """
    try:
        with path.open(encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = tomllib.loads(file.read())
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: {exc}") from exc
    if data.get("accounts"):
        check_private(path, "config", mode)
    parsed = structure(data, _ExchangeFile)
    keyring = Keyring()
    problems = Problems()
    for index, account in enumerate(parsed.accounts):
        if account.auth_token is not None:
            keyring.add_auth_token(account.sid, account.auth_token)
        for api_key in account.api_keys:
            keyring.add_api_key(account.sid, api_key.sid, api_key.secret)
        if account.auth_token is None and not account.api_keys:
            problems.add(
                f"accounts[{index}]",
                "needs an auth_token or at least one api_keys entry",
            )
    problems.check()
    section = parsed.exchange
    values: dict[str, Any] = {"keyring": keyring}
    if section.listen is not None:
        values["host"], values["port"] = section.listen
    for key in (
        "ring_timeout",
        "heartbeat_interval",
        "idle_timeout",
        "media_addresses",
        "gateway_name",
        "resume_grace",
    ):
        if getattr(section, key) is not None:
            values[key] = getattr(section, key)
    limits = {k: getattr(section, k) for k in _QUOTA_KEYS}
    values["quotas"] = Quotas(**{k: v for k, v in limits.items() if v is not None})
    return ExchangeConfig(**values)


def build_config(
    *,
    config_file: Path | None = None,
    listen: str | None = None,
    account_sid: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    auth_token: str | None = None,
    ring_timeout: float | None = None,
    heartbeat_interval: float | None = None,
    idle_timeout: float | None = None,
    media_addresses: tuple[str, ...] | None = None,
) -> ExchangeConfig:
    """Merge an optional file with command-line values (these win).

    ``api_key`` needs ``api_secret`` and ``account_sid``; ``auth_token``
    needs ``account_sid``. At least one credential must be configured. The
    CLI reads both secrets from files or the environment, never from its
    command line.

    Raises:
        ConfigError: naming the offending option or key.
    """
    config = load_config_file(config_file) if config_file else ExchangeConfig()
    keyring = config.keyring
    if account_sid is not None:
        validate_sid(account_sid, "AC", "account_sid")
    if api_key is not None or api_secret is not None:
        if account_sid is None:
            raise ConfigError("account_sid", "required with --api-key")
        if api_key is None:
            raise ConfigError("api_key", "required with an API secret")
        if not api_secret:
            raise ConfigError(
                "api_secret",
                "required with --api-key: --api-secret-file FILE (mode 0600) "
                "or $APPLIANCE_API_SECRET",
            )
        keyring.add_api_key(
            account_sid, validate_sid(api_key, "SK", "api_key"), api_secret
        )
    if auth_token is not None:
        if account_sid is None:
            raise ConfigError("account_sid", "required with an Auth Token")
        keyring.add_auth_token(account_sid, _string(auth_token, "auth_token"))
    if account_sid is not None and account_sid not in keyring.account_sids:
        raise ConfigError(
            "api_key",
            "--account-sid needs --api-key or an Auth Token "
            "(--auth-token-file FILE or $APPLIANCE_AUTH_TOKEN)",
        )
    if not keyring.account_sids:
        raise ConfigError(
            "account_sid", "no account configured (use --account-sid or --config)"
        )
    changes: dict[str, Any] = {}
    if listen is not None:
        changes["host"], changes["port"] = parse_listen(listen)
    if ring_timeout is not None:
        changes["ring_timeout"] = ring_timeout
    if heartbeat_interval is not None:
        changes["heartbeat_interval"] = heartbeat_interval
    if idle_timeout is not None:
        changes["idle_timeout"] = idle_timeout
    if media_addresses is not None:
        changes["media_addresses"] = media_addresses
    return replace(config, **changes)
