"""Front-panel settings: the ``[ui]`` configuration and what the user sets.

:class:`UiConfig` is the ``[ui]`` section of the service configuration,
validated by :func:`parse_ui_config` through the shared schema
(:mod:`appliance.schema`), so a bad ``[ui]`` key fails ``appliance
show-config`` exactly as it fails ``appliance run``. It lives here, on the
config side, rather than in the asyncio controller, so that loading the
configuration does not import the engine.

:class:`PanelSettings` is what the user sets on the panel. Today that is the
volume level of each role (Vol+/Vol-). A desk phone that forgets its ringer
volume on every power cut is a phone that rings at full volume in a quiet
office, so the levels live in a small JSON file
(``ui.state_file``, by default in the service's StateDirectory).

Writes are atomic: a temporary file in the same directory, fsync, rename,
fsync of the directory, so a power cut leaves the old file or the new one,
never half of one. A file that cannot be parsed is moved aside to
``NAME.bad`` (kept for diagnosis, not overwritten by the next save) and the
defaults apply; one that cannot be read (permissions, I/O error) is left as it
is. Either way the phone starts. The do-not-disturb switch is kept in the same
file, for the same reason, and so is the directory once it is edited on the
web page: from then on it replaces ``[ui.directory]`` (the operator's TOML is
never rewritten by the phone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.files import write_atomic
from appliance.schema import Problems, register, structure
from appliance.ui.calllog_view import DND_MODES
from appliance.ui.panel import Panel
from appliance.ui.volume import VOLUME_ROLES

__all__ = [
    "DISPLAY_DRIVER_CHOICES",
    "PIN_FACTORIES",
    "PanelSettings",
    "UiConfig",
    "parse_ui_config",
    "ui_config_to_mapping",
]

logger = logging.getLogger(__name__)

_FORMAT = 1

#: gpiozero pin factories ``ui.pin_factory`` may name (app.py maps them).
PIN_FACTORIES = ("lgpio", "rpigpio", "native", "mock")
#: ``ui.display_driver``: "" keeps the pin map's driver; "terminal" draws the
#: OLED in a terminal (the simulator's display backend).
DISPLAY_DRIVER_CHOICES = ("", "ssd1306", "sh1106", "dummy", "terminal")


@dataclass(frozen=True)
class UiConfig:
    """The ``[ui]`` section of the service configuration.

    Attributes:
        enabled: run the front panel (a phone without GPIO leaves it off).
        pinmap: path of the pin map (``hw/pinmap-*.toml``).
        pin_factory: gpiozero pin factory name (``lgpio`` on a Pi, ``mock``).
        display_driver: overrides the pin map's ``display.driver`` when set
            (``dummy`` runs a phone with no OLED fitted, ``terminal`` draws
            it in a terminal).
        max_fps: most OLED frames written per second.
        country: ring cadence (``appliance.cadence.COUNTRIES``).
        directory: dial code -> client name (``[ui.directory]``).
        ignore_after_rings: ``None`` rings until the caller gives up (``0`` in
            the file); see :class:`~appliance.ui.panel.Panel` for this,
            ``max_dial_length`` and ``error_display_s``.
        state_file: where the panel keeps the user's volume levels
            (:class:`PanelSettings`); "" keeps none.
        screen_file: a PNG that every OLED frame is also written to, to see
            the screen from a shell (support, tests); "" writes none.
        dnd_mode: do-not-disturb declines calls as ``busy``, or ``ignore`` lets
            them ring on at the caller; the on/off switch is in ``state_file``.
        call_log_file: the call log's SQLite database; "" puts ``calls.db``
            in systemd's ``STATE_DIRECTORY`` (``/var/lib/appliance``), and
            keeps the log in memory only when there is none (tests, the
            simulator).
        call_log_max: the most calls the log keeps (oldest dropped first).
        clock_sync_file: exists once the system clock is synchronised
            (systemd-timesyncd's flag); until then the clock shows as unknown.
            "" trusts the clock at once.
    """

    enabled: bool = False
    pinmap: str = ""
    pin_factory: str = "lgpio"
    display_driver: str = ""
    max_fps: float = 10.0
    country: str = "US"
    directory: Mapping[str, str] = field(default_factory=dict)
    ignore_after_rings: int | None = None
    max_dial_length: int = 20
    error_display_s: float = 4.0
    state_file: str = ""
    screen_file: str = ""
    dnd_mode: str = "busy"
    call_log_file: str = ""
    call_log_max: int = 200
    clock_sync_file: str = "/run/systemd/timesync/synchronized"

    def make_panel(self, volume: Mapping[str, int] | None = None) -> Panel:
        """Build the Panel these settings describe, at the saved ``volume``.

        Raises:
            ConfigError: an invalid directory entry or option.
        """
        return Panel(
            directory=self.directory,
            country=self.country,
            max_dial_length=self.max_dial_length,
            ignore_after_rings=self.ignore_after_rings,
            error_display_s=self.error_display_s,
            volume=volume,
            dnd_mode=self.dnd_mode,
        )


def _choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise ValueError(f"must be one of {shown}, not {value!r}")
        return value

    return check


def _max_fps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {value!r}")
    if not 0 < value <= 60:
        raise ValueError("must be in (0, 60]")
    return float(value)


def _country(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    return value.upper()


def _call_log_max(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {value!r}")
    if not 1 <= value <= 100_000:
        raise ValueError("must be in [1, 100000]")
    return value


def _rings(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {value!r}")
    return value or None  # 0 = never


register(
    UiConfig,
    {
        "pin_factory": _choice(PIN_FACTORIES),
        "display_driver": _choice(DISPLAY_DRIVER_CHOICES),
        "max_fps": _max_fps,
        "country": _country,
        "ignore_after_rings": _rings,
        "dnd_mode": _choice(DND_MODES),
        "call_log_max": _call_log_max,
    },
)


def parse_ui_config(raw: Mapping[str, Any], prefix: str = "ui") -> UiConfig:
    """Validate the ``[ui]`` table (keys as in :class:`UiConfig`).

    ``ignore_after_rings = 0`` means never. The directory, cadence country and
    limits are checked by building the Panel once.

    Raises:
        ConfigError: every problem, each naming ``ui.KEY``.
    """
    config = structure(raw, UiConfig, prefix)
    problems = Problems()
    if config.enabled and not config.pinmap:
        problems.add(f"{prefix}.pinmap", f"required when {prefix}.enabled is true")
    try:
        config.make_panel()
    except ConfigError as exc:
        problems.extend(exc)  # Panel's keys already read ui.KEY
    problems.check()
    return config


def ui_config_to_mapping(config: UiConfig) -> dict[str, Any]:
    """``config`` as a ``[ui]`` table that parses back to the same values."""
    return {
        "enabled": config.enabled,
        "pinmap": config.pinmap,
        "pin_factory": config.pin_factory,
        "display_driver": config.display_driver,
        "max_fps": config.max_fps,
        "country": config.country,
        "ignore_after_rings": config.ignore_after_rings or 0,
        "max_dial_length": config.max_dial_length,
        "error_display_s": config.error_display_s,
        "state_file": config.state_file,
        "screen_file": config.screen_file,
        "dnd_mode": config.dnd_mode,
        "call_log_file": config.call_log_file,
        "call_log_max": config.call_log_max,
        "clock_sync_file": config.clock_sync_file,
        "directory": dict(config.directory),
    }


class PanelSettings:
    """The settings file at ``path`` (``None``: nothing is kept).

    Methods do blocking file I/O; the controller calls them off the event loop.
    """

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None

    def load_volume(self) -> dict[str, int]:
        """Return the saved level per role; ``{}`` when none or unreadable.

        Roles this version does not know are skipped (a newer version may
        have written them); levels are clamped by the Panel.
        """
        if self.path is None:
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            # Permissions or an I/O error: the file may be fine; leave it.
            logger.warning("%s: cannot read (%s); defaults apply", self.path, exc)
            return {}
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            self._set_aside(f"not valid JSON ({exc})")
            return {}
        volume = raw.get("volume") if isinstance(raw, dict) else None
        if not isinstance(volume, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in volume.items()
        ):
            self._set_aside("no valid 'volume' table")
            return {}
        return {k: v for k, v in volume.items() if k in VOLUME_ROLES}

    def load_dnd(self) -> bool:
        """Whether do-not-disturb was left on (False when unknown)."""
        return self._saved("dnd") is True

    def _saved(self, key: str) -> Any:
        """``key`` of the state file, or None (no file, unreadable, absent).

        Quietly: :meth:`load_volume` reports and sets a bad file aside.
        """
        if self.path is None:
            return None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return raw.get(key) if isinstance(raw, dict) else None

    def load_directory(self) -> dict[str, str] | None:
        """The directory as last edited on the page; None when it never was
        (then ``[ui.directory]`` applies). The Panel checks the entries."""
        found = self._saved("directory")
        if not isinstance(found, dict):
            return None
        return {k: v for k, v in found.items() if isinstance(v, str)}

    def load_country(self) -> str | None:
        """The country as last chosen on the page; None when it never was
        (then ``ui.country`` applies). The Panel checks it."""
        found = self._saved("country")
        return found if isinstance(found, str) else None

    def save_volume(
        self,
        volume: Mapping[str, int],
        *,
        dnd: bool = False,
        directory: Mapping[str, str] | None = None,
        country: str | None = None,
    ) -> None:
        """Replace the file atomically with ``volume``, the ``dnd`` switch,
        the edited ``directory`` and the chosen ``country`` (None: not edited
        or chosen, not written).

        Raises:
            OSError: the directory is not writable or the disk is full (the
                previous file is left as it was).
        """
        if self.path is None:
            return
        state: dict[str, Any] = {"format": _FORMAT, "volume": dict(volume), "dnd": dnd}
        if directory is not None:
            state["directory"] = dict(directory)
        if country is not None:
            state["country"] = country
        data = json.dumps(state, indent=1)
        write_atomic(self.path, (data + "\n").encode())

    def _set_aside(self, why: str) -> None:
        assert self.path is not None
        bad = self.path.with_name(self.path.name + ".bad")
        logger.warning("%s: %s; defaults apply, file kept as %s", self.path, why, bad)
        try:
            self.path.replace(bad)
        except OSError as exc:
            logger.warning("cannot move %s aside: %s", self.path, exc)
