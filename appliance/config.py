"""Service configuration: layered TOML files validated into frozen dataclasses.

Layers, lowest first (style guide 4.8): the package's ``default.toml``, then
``/etc/appliance/appliance.toml`` (the image), then
``/var/lib/appliance/provisioned.toml`` (written by provisioning). Later layers
override earlier ones key by key. Unknown keys are errors with a "did you mean"
hint, and every error names ``section.key``. The access token never lives in
these files: ``phone.token_file`` points at a separate 0600 file, and the token
is held as a :class:`Secret` that prints as ``********``.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.phone.options import DeviceOptions, parse_options

__all__ = [
    "DEFAULT_LAYERS",
    "AppConfig",
    "Secret",
    "environ_token",
    "load_config",
    "read_token",
]

DEFAULT_LAYERS = (
    Path("/etc/appliance/appliance.toml"),
    Path("/var/lib/appliance/provisioned.toml"),
)

_SECTIONS: dict[str, set[str]] = {
    "phone": {"token_file"},
    "device": set(),  # any Device option, validated by parse_options
    "log": {"level"},
    "ui": set(),  # the front panel; keys checked by ui.controller.parse_ui_config
}
_LOG_LEVELS = ("debug", "info", "warning", "error")


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself (only to hand it to the gateway)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"


@dataclass(frozen=True)
class AppConfig:
    """The merged, validated service configuration."""

    token_file: Path | None = None
    device: DeviceOptions = field(default_factory=DeviceOptions)
    device_raw: Mapping[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    sources: tuple[str, ...] = ()
    ui_raw: Mapping[str, Any] = field(default_factory=dict)


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value


def _hint(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _read_layer(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc


def load_config(paths: Sequence[Path] | None = None) -> AppConfig:
    """Load the default layer and then each existing file of ``paths``.

    ``paths`` defaults to :data:`DEFAULT_LAYERS`; a missing file is skipped, an
    unreadable or invalid one is an error.

    Raises:
        ConfigError: names the file or ``section.key`` at fault.
    """
    default = resources.files("appliance").joinpath("default.toml").read_text()
    merged: dict[str, Any] = tomllib.loads(default)
    sources = ["<default>"]
    for path in DEFAULT_LAYERS if paths is None else paths:
        if not path.exists():
            continue
        _merge(merged, _read_layer(path))
        sources.append(str(path))
    for section, values in merged.items():
        if section not in _SECTIONS:
            raise ConfigError(
                section, "unknown section" + _hint(section, list(_SECTIONS))
            )
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a table")
        allowed = _SECTIONS[section]
        if allowed:
            for key in values:
                if key not in allowed:
                    raise ConfigError(
                        f"{section}.{key}", "unknown key" + _hint(key, sorted(allowed))
                    )
    phone = merged.get("phone", {})
    token_file = phone.get("token_file")
    if token_file is not None and (not isinstance(token_file, str) or not token_file):
        raise ConfigError("phone.token_file", "must be a file path")
    level = merged.get("log", {}).get("level", "info")
    if level not in _LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LOG_LEVELS)}")
    device_raw = merged.get("device", {})
    try:
        options = parse_options(device_raw)
    except ConfigError as exc:
        raise ConfigError(f"device.{exc.key}", exc.reason) from exc
    return AppConfig(
        token_file=Path(token_file) if token_file else None,
        device=options,
        device_raw=device_raw,
        log_level=level,
        sources=tuple(sources),
        ui_raw=merged.get("ui", {}),
    )


def read_token(path: Path) -> Secret:
    """Read the access token from ``path``.

    A token file readable by other users is refused: it grants calls on the
    account.

    Raises:
        ConfigError: missing, empty, or group/world-readable file.
    """
    try:
        info = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            "phone.token_file", f"cannot read {path}: {exc.strerror}"
        ) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "phone.token_file", f"{path} must not be readable by others (chmod 600)"
        )
    if not text:
        raise ConfigError("phone.token_file", f"{path} is empty")
    return Secret(text)


def environ_token() -> Secret | None:
    """The token from the ``APPLIANCE_TOKEN`` environment variable, if set."""
    value = os.environ.get("APPLIANCE_TOKEN")
    return Secret(value) if value else None
