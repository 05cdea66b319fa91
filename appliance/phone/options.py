"""Device options: the seed's options with their defaults and validation.

Each option is validated when given, by :func:`parse_options`; unknown names are
errors with a "did you mean" hint. ``OPTION_STATUS`` records which options take
full effect today and which are stored for a later hardware feature, so that no
option is silently ignored (docs/options.md is generated from the same table).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from appliance.audio.sounds import SOUND_NAMES
from appliance.errors import ConfigError
from appliance.signaling.backoff import MIN_BACKOFF_MAX_MS
from appliance.signaling.urls import signaling_urls

__all__ = [
    "OPTION_STATUS",
    "SOUND_NAMES",
    "DeviceOptions",
    "IceServerOption",
    "parse_options",
]


#: Option name -> what it does in this firmware today.
OPTION_STATUS: dict[str, str] = {
    "allow_incoming_while_busy": "complete",
    "audio_constraints": "stored and validated; processing (AEC/NS/AGC) comes with "
    "the voice-quality work and is reported as not applied",
    "backoff_max_ms": "complete",
    "close_protection": "complete: stopping the service during a call logs the "
    "message and ends the call cleanly",
    "codec_preferences": "complete",
    "debug": "complete: DEBUG logging for the engine",
    "dscp": "complete: media socket marked EF (DSCP 46)",
    "edge": "complete",
    "enable_ringing_state": "complete",
    "fake_local_dtmf": "complete: off-standard 100 ms local feedback pairs "
    "(device.audio)",
    "input_device": "complete for tone:, file:, null and alsa: (device.audio's "
    "'default' input)",
    "local_addresses": "complete",
    "output_device": "complete for file:, null and alsa: (device.audio's "
    "'default' output)",
    "region": "complete",
    "rtc_configuration": "complete: ICE servers",
    "signaling_url": "complete",
    "sounds": "complete: WAV/MP3 paths or http(s) URLs, fetched once and cached; "
    "a bad one logs an error and the default plays",
    "warnings": "complete: quality warnings and deprecation log lines",
}


@dataclass(frozen=True)
class IceServerOption:
    """One STUN/TURN server of ``rtc_configuration``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class DeviceOptions:
    """Validated Device options (seed defaults)."""

    allow_incoming_while_busy: bool = False
    audio_constraints: bool | Mapping[str, Any] = True
    backoff_max_ms: int = 20_000
    close_protection: bool | str = False
    codec_preferences: tuple[str, ...] = ("opus", "pcmu")
    debug: bool = False
    dscp: bool = True
    edge: str | tuple[str, ...] | None = None
    enable_ringing_state: bool = False
    fake_local_dtmf: bool = False
    input_device: str = "null"
    local_addresses: tuple[str, ...] | None = None
    output_device: str = "null"
    region: str = "gll"
    rtc_configuration: tuple[IceServerOption, ...] = ()
    signaling_url: str | tuple[str, ...] | None = None
    sounds: Mapping[str, str] | None = None
    warnings: bool = True

    def urls(self) -> list[str]:
        """Signaling URLs to try, in order."""
        return signaling_urls(
            signaling_url=self.signaling_url,
            edge=self.edge,
            region=None
            if self.edge is not None and self.region == "gll"
            else self.region,
        )


_NAMES = {f.name for f in fields(DeviceOptions)}


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {value!r}")
    return value


def _str_list(key: str, value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(key, "must be a string or a non-empty list of strings")


def _ice_servers(value: Any) -> tuple[IceServerOption, ...]:
    key = "rtc_configuration"
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a mapping such as {'ice_servers': [...]}")
    unknown = set(value) - {"ice_servers"}
    if unknown:
        raise ConfigError(key, f"unsupported keys: {', '.join(sorted(unknown))}")
    servers = value.get("ice_servers", [])
    if not isinstance(servers, Sequence) or isinstance(servers, str):
        raise ConfigError(f"{key}.ice_servers", "must be a list")
    result = []
    for i, server in enumerate(servers):
        where = f"{key}.ice_servers[{i}]"
        if not isinstance(server, Mapping):
            raise ConfigError(where, "must be a mapping with 'urls'")
        urls = server.get("urls")
        url_list = [urls] if isinstance(urls, str) else urls
        if (
            not isinstance(url_list, Sequence)
            or not url_list
            or not all(
                isinstance(u, str)
                and u.split(":", 1)[0] in ("stun", "stuns", "turn", "turns")
                for u in url_list
            )
        ):
            raise ConfigError(where, "urls must be stun:, stuns:, turn: or turns: URLs")
        username = server.get("username")
        credential = server.get("credential")
        if any(u.startswith("turn") for u in url_list) and (
            not isinstance(username, str) or not isinstance(credential, str)
        ):
            raise ConfigError(where, "a TURN server needs username and credential")
        result.append(IceServerOption(tuple(url_list), username, credential))
    return tuple(result)


def _validate(key: str, value: Any) -> Any:
    if key in (
        "allow_incoming_while_busy",
        "debug",
        "dscp",
        "enable_ringing_state",
        "fake_local_dtmf",
        "warnings",
    ):
        return _bool(key, value)
    if key == "audio_constraints":
        if isinstance(value, bool | Mapping):
            return value
        raise ConfigError(key, "must be true, false or a mapping of constraints")
    if key == "backoff_max_ms":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, not {value!r}")
        if value < MIN_BACKOFF_MAX_MS:
            raise ConfigError(key, f"must be at least {MIN_BACKOFF_MAX_MS}")
        return value
    if key == "close_protection":
        if isinstance(value, bool | str):
            return value
        raise ConfigError(key, "must be true, false or a message string")
    if key == "codec_preferences":
        codecs = _str_list(key, value)
        codecs = (codecs,) if isinstance(codecs, str) else codecs
        lowered = tuple(c.lower() for c in codecs)
        bad = [c for c in lowered if c not in ("opus", "pcmu")]
        if bad:
            raise ConfigError(
                key, f"unsupported codec(s): {', '.join(bad)}; use opus and/or pcmu"
            )
        return lowered
    if key in ("edge", "signaling_url"):
        return None if value is None else _str_list(key, value)
    if key in ("input_device", "output_device"):
        if not isinstance(value, str) or not value:
            raise ConfigError(
                key,
                "must be a device id such as 'tone:440', 'file:/path.wav' or 'null'",
            )
        return value
    if key == "local_addresses":
        if value is None:
            return None
        addresses = _str_list(key, value)
        addresses = (addresses,) if isinstance(addresses, str) else addresses
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError as exc:
                raise ConfigError(key, f"not an IP address: {address!r}") from exc
        return addresses
    if key == "region":
        if not isinstance(value, str):
            raise ConfigError(key, "must be a string")
        return value
    if key == "rtc_configuration":
        return _ice_servers(value)
    if key == "sounds":
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(key, "must map sound names to URLs or WAV paths")
        for name, url in value.items():
            if name not in SOUND_NAMES:
                hint = difflib.get_close_matches(str(name), SOUND_NAMES, n=1)
                raise ConfigError(
                    f"sounds.{name}",
                    "unknown sound" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                )
            if not isinstance(url, str) or not url:
                raise ConfigError(f"sounds.{name}", "must be a URL or a file path")
        return dict(value)
    raise ConfigError(key, "unknown option")  # pragma: no cover - guarded by caller


def parse_options(
    options: Mapping[str, Any], base: DeviceOptions | None = None
) -> DeviceOptions:
    """Validate ``options`` and merge them over ``base`` (or the defaults).

    Raises:
        ConfigError: an unknown option or an invalid value; the message names it.
    """
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key not in _NAMES:
            hint = difflib.get_close_matches(key, sorted(_NAMES), n=1)
            raise ConfigError(
                key, "unknown option" + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        changes[key] = _validate(key, value)
    result = replace(base or DeviceOptions(), **changes)
    result.urls()  # validates signaling_url / edge / region together
    return result
