"""Front-panel pin maps: which GPIO does what, read from a TOML file.

The reference build lives in ``hw/pinmap-reference.toml``; another build is
just another file (``hw/pinmap-sh1106.toml``). Pin numbers are Broadcom (BCM)
GPIO numbers, as gpiozero expects, not header positions.

Validation collects every problem and raises one :class:`ConfigError` whose
``key`` names the first offending key (``buttons.accept``) and whose message
lists them all. Using the same GPIO twice is an error, and so is using the
I2C pins of the display bus for anything else.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import ConfigError

__all__ = [
    "BUTTON_NAMES",
    "DISPLAY_DRIVERS",
    "ButtonPins",
    "DisplaySpec",
    "InputTiming",
    "KeypadPins",
    "OutputPins",
    "PinMap",
    "load_pinmap",
    "parse_pinmap",
]

#: Button roles in the order they are documented in ``hw/wiring.md``.
BUTTON_NAMES = ("ready", "accept", "hangup", "mute", "vol_up", "vol_down", "hook")
_REQUIRED_BUTTONS = ("ready", "accept", "hangup")

#: Display drivers the firmware knows (``dummy`` renders in memory only).
DISPLAY_DRIVERS = ("ssd1306", "sh1106", "dummy")

# BCM GPIO 0-27 are on the 40-pin header. GPIO 0/1 are the HAT ID EEPROM bus
# (reserved by the HAT specification); I2C bus 1 is GPIO 2 (SDA) and 3 (SCL).
_HEADER_GPIOS = range(2, 28)
_I2C1_PINS = {2: "I2C1 SDA", 3: "I2C1 SCL"}


@dataclass(frozen=True)
class ButtonPins:
    """Push buttons and the hook switch; ``None`` means not fitted.

    Every button closes to ground and uses the SoC pull-up (active low). The
    hook switch closes when the handset is lifted, unless ``hook_closed_on_hook``.
    """

    ready: int
    accept: int
    hangup: int
    mute: int | None = None
    vol_up: int | None = None
    vol_down: int | None = None
    hook: int | None = None
    hook_closed_on_hook: bool = False

    def fitted(self) -> dict[str, int]:
        """Return ``{role: gpio}`` for the buttons that are fitted."""
        pins = {name: getattr(self, name) for name in BUTTON_NAMES}
        return {name: pin for name, pin in pins.items() if pin is not None}


@dataclass(frozen=True)
class KeypadPins:
    """A matrix keypad: rows are outputs, columns inputs with pull-ups."""

    rows: tuple[int, ...]
    columns: tuple[int, ...]
    layout: tuple[str, ...] = ("123", "456", "789", "*0#")


@dataclass(frozen=True)
class OutputPins:
    """LEDs and the optional piezo buzzer.

    Without ``buzzer_tone_hz`` the buzzer is an active one (it beeps when
    powered); with it, a passive piezo driven by PWM at that pitch
    (gpiozero ``TonalBuzzer``, 220-880 Hz).
    """

    ringer: int
    status: int
    ringer_pwm: bool = True
    ringer_brightness: float = 1.0
    buzzer: int | None = None
    buzzer_tone_hz: float | None = None


@dataclass(frozen=True)
class DisplaySpec:
    """The OLED: luma driver name, I2C bus and address, geometry, rotation.

    ``rotate`` is luma's quarter-turn count (0-3).
    """

    driver: str = "ssd1306"
    i2c_port: int = 1
    address: int = 0x3C
    width: int = 128
    height: int = 64
    rotate: int = 0


@dataclass(frozen=True)
class InputTiming:
    """Debounce, hold and scan timing for buttons and keypad."""

    debounce_ms: int = 20
    press_debounce_ms: int = 5
    bounce_time_ms: int | None = 5
    hold_ms: int = 1000
    hold_keys: tuple[str, ...] = ("#", "hangup")
    scan_interval_ms: int = 5


@dataclass(frozen=True)
class PinMap:
    """A whole front-panel build."""

    name: str
    buttons: ButtonPins
    keypad: KeypadPins
    outputs: OutputPins
    display: DisplaySpec = field(default_factory=DisplaySpec)
    timing: InputTiming = field(default_factory=InputTiming)
    board: str = ""

    def used_pins(self) -> dict[int, str]:
        """Return ``{gpio: "section.key"}`` for every GPIO in use."""
        used: dict[int, str] = {}
        for name, pin in self.buttons.fitted().items():
            used[pin] = f"buttons.{name}"
        for i, pin in enumerate(self.keypad.rows):
            used[pin] = f"keypad.rows[{i}]"
        for i, pin in enumerate(self.keypad.columns):
            used[pin] = f"keypad.columns[{i}]"
        used[self.outputs.ringer] = "outputs.ringer"
        used[self.outputs.status] = "outputs.status"
        if self.outputs.buzzer is not None:
            used[self.outputs.buzzer] = "outputs.buzzer"
        return used


class _Errors:
    """Collects validation problems as (key, reason)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, reason: str) -> None:
        self.items.append((key, reason))

    def raise_if_any(self, source: str) -> None:
        if not self.items:
            return
        key, reason = self.items[0]
        if len(self.items) > 1:
            rest = "; ".join(f"{k}: {r}" for k, r in self.items[1:])
            reason = f"{reason} (also {rest})"
        if source:
            reason = f"{reason} [in {source}]"
        raise ConfigError(key, reason)


def _table(
    data: Mapping[str, object], key: str, errors: _Errors, *, required: bool = True
) -> Mapping[str, object]:
    value = data.get(key)
    if value is None:
        if required:
            errors.add(key, "missing section")
        return {}
    if not isinstance(value, Mapping):
        errors.add(key, "must be a table")
        return {}
    return value


def _check_keys(
    table: Mapping[str, object], allowed: tuple[str, ...], prefix: str, errors: _Errors
) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            errors.add(f"{prefix}{key}", f"unknown key{extra}")


def _gpio(value: object, key: str, errors: _Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(key, f"must be a BCM GPIO number, got {value!r}")
        return None
    if value not in _HEADER_GPIOS:
        errors.add(key, f"GPIO {value} is not a usable header GPIO (2-27)")
        return None
    return value


def _int(
    table: Mapping[str, object],
    key: str,
    default: int,
    prefix: str,
    errors: _Errors,
    *,
    low: int,
    high: int,
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(f"{prefix}{key}", f"must be an integer, got {value!r}")
        return default
    if not low <= value <= high:
        errors.add(f"{prefix}{key}", f"must be between {low} and {high}, got {value}")
        return default
    return value


def _bool(
    table: Mapping[str, object], key: str, default: bool, prefix: str, errors: _Errors
) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        errors.add(f"{prefix}{key}", f"must be true or false, got {value!r}")
        return default
    return value


def _pin_list(value: object, key: str, errors: _Errors) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        errors.add(key, "must be a non-empty list of BCM GPIO numbers")
        return ()
    pins = [_gpio(v, f"{key}[{i}]", errors) for i, v in enumerate(value)]
    return tuple(p for p in pins if p is not None)


def _buttons(data: Mapping[str, object], errors: _Errors) -> ButtonPins:
    table = _table(data, "buttons", errors)
    _check_keys(table, (*BUTTON_NAMES, "hook_closed_on_hook"), "buttons.", errors)
    pins: dict[str, int | None] = {}
    for name in BUTTON_NAMES:
        value = table.get(name)
        if value is None:
            if name in _REQUIRED_BUTTONS and table:
                errors.add(f"buttons.{name}", "missing (this button is required)")
            pins[name] = None
        else:
            pins[name] = _gpio(value, f"buttons.{name}", errors)
    return ButtonPins(
        ready=pins["ready"] or 0,
        accept=pins["accept"] or 0,
        hangup=pins["hangup"] or 0,
        mute=pins["mute"],
        vol_up=pins["vol_up"],
        vol_down=pins["vol_down"],
        hook=pins["hook"],
        hook_closed_on_hook=_bool(
            table, "hook_closed_on_hook", False, "buttons.", errors
        ),
    )


def _keypad(data: Mapping[str, object], errors: _Errors) -> KeypadPins:
    table = _table(data, "keypad", errors)
    _check_keys(table, ("rows", "columns", "layout"), "keypad.", errors)
    if not table:
        return KeypadPins((), ())
    rows = _pin_list(table.get("rows"), "keypad.rows", errors)
    columns = _pin_list(table.get("columns"), "keypad.columns", errors)
    raw_layout = table.get("layout", list(KeypadPins((), ()).layout))
    layout: tuple[str, ...] = ()
    if not isinstance(raw_layout, list) or not all(
        isinstance(r, str) for r in raw_layout
    ):
        errors.add("keypad.layout", "must be a list of strings, one per row")
    else:
        layout = tuple(raw_layout)
        if rows and len(layout) != len(rows):
            errors.add("keypad.layout", f"has {len(layout)} rows, expected {len(rows)}")
        elif columns and any(len(r) != len(columns) for r in layout):
            errors.add("keypad.layout", f"every row must have {len(columns)} keys")
        keys = "".join(layout)
        if len(set(keys)) != len(keys):
            errors.add("keypad.layout", "repeats a key")
    return KeypadPins(rows, columns, layout)


def _outputs(data: Mapping[str, object], errors: _Errors) -> OutputPins:
    table = _table(data, "outputs", errors)
    allowed = (
        "ringer",
        "status",
        "ringer_pwm",
        "ringer_brightness",
        "buzzer",
        "buzzer_tone_hz",
    )
    _check_keys(table, allowed, "outputs.", errors)
    if not table:
        return OutputPins(0, 0)
    pins: dict[str, int | None] = {}
    for name in ("ringer", "status"):
        value = table.get(name)
        if value is None:
            errors.add(f"outputs.{name}", "missing")
            pins[name] = None
        else:
            pins[name] = _gpio(value, f"outputs.{name}", errors)
    buzzer = table.get("buzzer")
    tone = table.get("buzzer_tone_hz")
    if tone is not None and (
        isinstance(tone, bool)
        or not isinstance(tone, int | float)
        or not 220.0 <= tone <= 880.0
    ):
        # TonalBuzzer's default range: one octave either side of A4.
        errors.add("outputs.buzzer_tone_hz", "must be a number from 220 to 880")
        tone = None
    brightness = table.get("ringer_brightness", 1.0)
    if isinstance(brightness, bool) or not isinstance(brightness, int | float):
        errors.add("outputs.ringer_brightness", "must be a number")
        brightness = 1.0
    elif not 0.0 < brightness <= 1.0:
        errors.add("outputs.ringer_brightness", "must be in (0, 1]")
        brightness = 1.0
    return OutputPins(
        ringer=pins["ringer"] or 0,
        status=pins["status"] or 0,
        ringer_pwm=_bool(table, "ringer_pwm", True, "outputs.", errors),
        ringer_brightness=float(brightness),
        buzzer=None if buzzer is None else _gpio(buzzer, "outputs.buzzer", errors),
        buzzer_tone_hz=None if tone is None else float(tone),
    )


def _display(data: Mapping[str, object], errors: _Errors) -> DisplaySpec:
    table = _table(data, "display", errors, required=False)
    allowed = ("driver", "i2c_port", "address", "width", "height", "rotate")
    _check_keys(table, allowed, "display.", errors)
    driver = table.get("driver", "ssd1306")
    if driver not in DISPLAY_DRIVERS:
        errors.add("display.driver", f"must be one of {', '.join(DISPLAY_DRIVERS)}")
        driver = "ssd1306"
    p = "display."
    return DisplaySpec(
        driver=str(driver),
        i2c_port=_int(table, "i2c_port", 1, p, errors, low=0, high=22),
        # 7-bit I2C addresses; 0x00-0x07 and 0x78-0x7F are reserved (I2C spec 3.1.12).
        address=_int(table, "address", 0x3C, p, errors, low=0x08, high=0x77),
        width=_int(table, "width", 128, p, errors, low=8, high=256),
        height=_int(table, "height", 64, p, errors, low=8, high=256),
        rotate=_int(table, "rotate", 0, p, errors, low=0, high=3),
    )


def _timing(data: Mapping[str, object], errors: _Errors) -> InputTiming:
    table = _table(data, "timing", errors, required=False)
    allowed = (
        "debounce_ms",
        "press_debounce_ms",
        "bounce_time_ms",
        "hold_ms",
        "hold_keys",
        "scan_interval_ms",
    )
    _check_keys(table, allowed, "timing.", errors)
    p = "timing."
    bounce: int | None = _int(table, "bounce_time_ms", 5, p, errors, low=0, high=500)
    hold_keys = table.get("hold_keys", list(InputTiming().hold_keys))
    if not isinstance(hold_keys, list) or not all(
        isinstance(k, str) for k in hold_keys
    ):
        errors.add("timing.hold_keys", "must be a list of key or button names")
        hold_keys = list(InputTiming().hold_keys)
    return InputTiming(
        debounce_ms=_int(table, "debounce_ms", 20, p, errors, low=0, high=1000),
        press_debounce_ms=_int(
            table, "press_debounce_ms", 5, p, errors, low=0, high=1000
        ),
        # 0 disables gpiozero's own edge filter (ours still runs).
        bounce_time_ms=bounce or None,
        hold_ms=_int(table, "hold_ms", 1000, p, errors, low=50, high=10000),
        hold_keys=tuple(hold_keys),
        scan_interval_ms=_int(table, "scan_interval_ms", 5, p, errors, low=1, high=100),
    )


def parse_pinmap(data: Mapping[str, object], *, source: str = "") -> PinMap:
    """Validate a parsed TOML document into a :class:`PinMap`.

    Args:
        data: the document, as returned by :func:`tomllib.loads`.
        source: where it came from, for error messages.

    Raises:
        ConfigError: naming the first invalid key; the message lists all.
    """
    errors = _Errors()
    sections = ("build", "buttons", "keypad", "outputs", "display", "timing")
    _check_keys(data, sections, "", errors)
    build = _table(data, "build", errors, required=False)
    _check_keys(build, ("name", "board"), "build.", errors)
    pinmap = PinMap(
        name=str(build.get("name", "")),
        board=str(build.get("board", "")),
        buttons=_buttons(data, errors),
        keypad=_keypad(data, errors),
        outputs=_outputs(data, errors),
        display=_display(data, errors),
        timing=_timing(data, errors),
    )
    valid_names = {*BUTTON_NAMES, "hangup", *"".join(pinmap.keypad.layout)}
    for key in pinmap.timing.hold_keys:
        if key not in valid_names:
            errors.add("timing.hold_keys", f"{key!r} is neither a key nor a button")
    _check_duplicates(pinmap, errors)
    errors.raise_if_any(source)
    return pinmap


def _check_duplicates(pinmap: PinMap, errors: _Errors) -> None:
    seen: dict[int, str] = {}
    named: list[tuple[str, int | None]] = [
        (f"buttons.{n}", p) for n, p in pinmap.buttons.fitted().items()
    ]
    named += [(f"keypad.rows[{i}]", p) for i, p in enumerate(pinmap.keypad.rows)]
    named += [(f"keypad.columns[{i}]", p) for i, p in enumerate(pinmap.keypad.columns)]
    named += [
        ("outputs.ringer", pinmap.outputs.ringer),
        ("outputs.status", pinmap.outputs.status),
        ("outputs.buzzer", pinmap.outputs.buzzer),
    ]
    i2c = (
        _I2C1_PINS
        if pinmap.display.driver != "dummy" and pinmap.display.i2c_port == 1
        else {}
    )
    for key, pin in named:
        # 0 stands for a pin that already failed validation.
        if pin is None or pin == 0:
            continue
        if pin in i2c:
            errors.add(key, f"GPIO {pin} is {i2c[pin]}, used by the display")
        elif pin in seen:
            errors.add(key, f"GPIO {pin} is already used by {seen[pin]}")
        else:
            seen[pin] = key


def load_pinmap(path: str | Path) -> PinMap:
    """Read and validate a pin map file.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("pinmap", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("pinmap", f"{path} is not valid TOML: {exc}") from exc
    return parse_pinmap(data, source=str(path))
