"""Device options: the seed's options with their defaults and validation.

Each option is validated when given, by :func:`parse_options`, through the
shared schema mechanism (:mod:`appliance.schema`): every problem is reported at
once, unknown names with a "did you mean" hint, and values are strictly typed
(``"yes"`` is not ``true``). ``OPTION_STATUS`` records which options take
full effect today and which are stored for a later hardware feature, so that no
option is silently ignored (docs/options.md is generated from the same table).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from appliance.audio.sounds import SOUND_NAMES
from appliance.schema import Problems, did_you_mean, register, structure
from appliance.signaling.backoff import MIN_BACKOFF_MAX_MS
from appliance.signaling.urls import signaling_urls

__all__ = [
    "OPTION_STATUS",
    "OPUS_BITRATE_RANGE",
    "SOUND_NAMES",
    "DeviceOptions",
    "IceServerOption",
    "options_to_mapping",
    "parse_options",
]


#: Option name -> what it does in this firmware today.
OPTION_STATUS: dict[str, str] = {
    "allow_incoming_while_busy": "complete",
    "audio_constraints": "complete: echo_cancellation, noise_suppression and "
    "auto_gain_control switch speexdsp's processing of the microphone; true "
    "means the phone's default (off unless built as a speakerphone)",
    "backoff_max_ms": "complete",
    "close_protection": "complete: stopping the service during a call logs the "
    "message and ends the call cleanly",
    "codec_preferences": "complete: the order we offer; among common codecs "
    "the far side's order decides, the same codec both ways",
    "debug": "complete: DEBUG logging for the engine",
    "dscp": "complete: media socket marked EF (DSCP 46), signaling with "
    "signaling_dscp; false marks neither",
    "edge": "complete",
    "enable_ringing_state": "complete",
    "fake_local_dtmf": "complete: off-standard 100 ms local feedback pairs "
    "(device.audio)",
    "input_device": "complete for tone:, file:, null and alsa: (device.audio's "
    "'default' input)",
    "local_addresses": "complete",
    "max_call_signaling_timeout_ms": "complete: answered calls survive a "
    "signaling drop this long (reconnecting, then reconnected; 31003 when it "
    "runs out); sent as listen.reconnectTimeout, whole seconds up to 30",
    "opus_bitrate_bps": "complete: the bit rate our mono Opus is sent at, "
    "with in-band FEC, at most the far side's maxaveragebitrate (not an SDK "
    "option)",
    "output_device": "complete for file:, null and alsa: (device.audio's "
    "'default' output)",
    "region": "complete",
    "rtc_configuration": "complete: ICE servers",
    "signaling_dscp": "complete: DSCP of the signaling connection, AF31 (26) "
    "by default as desk phones do, 0 to leave it unmarked; a marked connection "
    "is made directly, not through a proxy named in the environment",
    "signaling_url": "complete",
    "sounds": "complete: WAV/MP3 paths or http(s) URLs, fetched once and cached; "
    "a bad one logs an error and the default plays",
    "telephone_event": "complete: false stops offering and accepting RFC 4733 "
    "telephone-event, so digits go as signaling frames (not an SDK option)",
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
    max_call_signaling_timeout_ms: int = 0
    opus_bitrate_bps: int = 32_000
    output_device: str = "null"
    region: str = "gll"
    rtc_configuration: tuple[IceServerOption, ...] = ()
    signaling_dscp: int = 26
    signaling_url: str | tuple[str, ...] | None = None
    sounds: Mapping[str, str] | None = None
    telephone_event: bool = True
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


_NAMES = tuple(f.name for f in fields(DeviceOptions))


def _str_list(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, str) for v in value)
    ):
        return tuple(value)
    raise ValueError("must be a string or a non-empty list of strings")


def _ice_servers(value: Any) -> tuple[IceServerOption, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping such as {'ice_servers': [...]}")
    problems = Problems()
    for key in sorted(set(value) - {"ice_servers"}):
        problems.add(key, "unknown key" + did_you_mean(key, ["ice_servers"]))
    servers = value.get("ice_servers", [])
    if not isinstance(servers, list | tuple):
        problems.add("ice_servers", "must be a list")
        servers = []
    result = []
    for i, server in enumerate(servers):
        where = f"ice_servers[{i}]"
        if not isinstance(server, Mapping):
            problems.add(where, "must be a mapping with 'urls'")
            continue
        for key in sorted(set(server) - {"urls", "username", "credential"}):
            problems.add(
                f"{where}.{key}",
                "unknown key" + did_you_mean(key, ["urls", "username", "credential"]),
            )
        urls = server.get("urls")
        url_list = [urls] if isinstance(urls, str) else urls
        if (
            not isinstance(url_list, list | tuple)
            or not url_list
            or not all(
                isinstance(u, str)
                and u.split(":", 1)[0] in ("stun", "stuns", "turn", "turns")
                for u in url_list
            )
        ):
            problems.add(where, "urls must be stun:, stuns:, turn: or turns: URLs")
            continue
        username = server.get("username")
        credential = server.get("credential")
        if any(u.startswith("turn") for u in url_list) and (
            not isinstance(username, str) or not isinstance(credential, str)
        ):
            problems.add(where, "a TURN server needs username and credential")
            continue
        result.append(IceServerOption(tuple(url_list), username, credential))
    problems.check()
    return tuple(result)


def _audio_constraints(value: Any) -> bool | Mapping[str, Any]:
    if isinstance(value, bool | Mapping):
        return value
    raise ValueError("must be true, false or a mapping of constraints")


def _backoff_max_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {value!r}")
    if value < MIN_BACKOFF_MAX_MS:
        raise ValueError(f"must be at least {MIN_BACKOFF_MAX_MS}")
    return value


def _non_negative_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number of milliseconds >= 0, not {value!r}")
    return value


def _dscp_value(value: Any) -> int:
    # The DSCP is the upper six bits of the DS field (RFC 2474 §3).
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 64:
        raise ValueError(f"must be a DSCP from 0 to 63, e.g. 26 (AF31), not {value!r}")
    return value


def _close_protection(value: Any) -> bool | str:
    if isinstance(value, bool | str):
        return value
    raise ValueError("must be true, false or a message string")


def _codecs(value: Any) -> tuple[str, ...]:
    codecs = _str_list(value)
    codecs = (codecs,) if isinstance(codecs, str) else codecs
    lowered = tuple(c.lower() for c in codecs)
    bad = [c for c in lowered if c not in ("opus", "pcmu")]
    if bad:
        raise ValueError(
            f"unsupported codec(s): {', '.join(bad)}; use opus and/or pcmu"
        )
    return lowered


#: What RFC 7587 §6.1 allows for maxaveragebitrate (libopus takes the same).
OPUS_BITRATE_RANGE = (6_000, 510_000)


def _opus_bitrate(value: Any) -> int:
    low, high = OPUS_BITRATE_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer (bits per second), not {value!r}")
    if not low <= value <= high:
        raise ValueError(
            f"must be a bit rate from {low} to {high} bits per second "
            f"(24000-32000 suits voice), not {value!r}"
        )
    return value


def _optional_str_list(value: Any) -> str | tuple[str, ...] | None:
    return None if value is None else _str_list(value)


def _audio_device(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(
            "must be a device id such as 'tone:440', 'file:/path.wav' or 'null'"
        )
    return value


def _local_addresses(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    addresses = _str_list(value)
    addresses = (addresses,) if isinstance(addresses, str) else addresses
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"not an IP address: {address!r}") from None
    return addresses


def _region(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _sounds(value: Any) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("must map sound names to URLs or WAV paths")
    problems = Problems()
    for name, url in value.items():
        if name not in SOUND_NAMES:
            problems.add(
                str(name), "unknown sound" + did_you_mean(str(name), SOUND_NAMES)
            )
        elif not isinstance(url, str) or not url:
            problems.add(str(name), "must be a URL or a file path")
    problems.check()
    return dict(value)


register(
    DeviceOptions,
    {
        "audio_constraints": _audio_constraints,
        "backoff_max_ms": _backoff_max_ms,
        "close_protection": _close_protection,
        "codec_preferences": _codecs,
        "edge": _optional_str_list,
        "input_device": _audio_device,
        "local_addresses": _local_addresses,
        "max_call_signaling_timeout_ms": _non_negative_ms,
        "opus_bitrate_bps": _opus_bitrate,
        "output_device": _audio_device,
        "region": _region,
        "rtc_configuration": _ice_servers,
        "signaling_dscp": _dscp_value,
        "signaling_url": _optional_str_list,
        "sounds": _sounds,
    },
)


def parse_options(
    options: Mapping[str, Any], base: DeviceOptions | None = None
) -> DeviceOptions:
    """Validate ``options`` and merge them over ``base`` (or the defaults).

    Every problem is reported at once (unknown names with a "did you mean"
    hint); ``signaling_url``, ``edge`` and ``region`` are then checked
    together.

    Raises:
        ConfigError: every unknown option and invalid value, each named.
    """
    parsed = structure(options, DeviceOptions)
    changes = {key: getattr(parsed, key) for key in options}
    result = replace(base or DeviceOptions(), **changes)
    result.urls()  # validates signaling_url / edge / region together
    return result


def options_to_mapping(options: DeviceOptions) -> dict[str, Any]:
    """The options as a TOML ``[device]`` table that parses back to ``options``.

    ``None`` stands for "not set" and is left out (TOML has no null).
    """
    result: dict[str, Any] = {}
    for f in fields(DeviceOptions):
        value = getattr(options, f.name)
        if f.name == "rtc_configuration":
            value = {
                "ice_servers": [
                    {
                        k: v
                        for k, v in (
                            ("urls", list(server.urls)),
                            ("username", server.username),
                            ("credential", server.credential),
                        )
                        if v is not None
                    }
                    for server in value
                ]
            }
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        if value is not None:
            result[f.name] = value
    return result
