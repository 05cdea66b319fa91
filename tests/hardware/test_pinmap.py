"""Validation of front-panel pin maps (hw/*.toml)."""

import tomllib
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.hardware.pinmap import load_pinmap, parse_pinmap

HW = Path(__file__).resolve().parents[2] / "hw"


def reference() -> dict:
    return tomllib.loads((HW / "pinmap-reference.toml").read_text())


def error_for(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_pinmap(data)
    return info.value


def test_reference_build_loads():
    pinmap = load_pinmap(HW / "pinmap-reference.toml")
    assert pinmap.buttons.ready == 5
    assert pinmap.keypad.rows == (17, 27, 22, 10)
    assert pinmap.keypad.columns == (9, 11, 25)
    assert pinmap.outputs.ringer == 12 and pinmap.outputs.ringer_pwm
    assert pinmap.display.driver == "ssd1306"
    assert pinmap.display.address == 0x3C
    assert (pinmap.display.width, pinmap.display.height) == (128, 64)
    assert len(pinmap.used_pins()) == 17


def test_sh1106_build_loads():
    pinmap = load_pinmap(HW / "pinmap-sh1106.toml")
    assert pinmap.display.driver == "sh1106"
    assert pinmap.display.rotate == 2
    assert pinmap.buttons.vol_up is None
    assert pinmap.outputs.buzzer is None


def test_pinmap_is_frozen():
    pinmap = load_pinmap(HW / "pinmap-reference.toml")
    with pytest.raises(AttributeError):
        pinmap.buttons.ready = 6  # type: ignore[misc]


def test_duplicate_pin_names_both_keys():
    data = reference()
    data["buttons"]["mute"] = data["buttons"]["ready"]
    err = error_for(data)
    assert err.key == "buttons.mute"
    assert "buttons.ready" in str(err)


def test_keypad_pin_reused_as_led_is_an_error():
    data = reference()
    data["outputs"]["status"] = data["keypad"]["rows"][0]
    err = error_for(data)
    assert err.key == "outputs.status"
    assert "keypad.rows[0]" in str(err)


def test_display_i2c_pins_are_reserved():
    data = reference()
    data["buttons"]["ready"] = 2
    err = error_for(data)
    assert err.key == "buttons.ready"
    assert "SDA" in str(err)


def test_unknown_key_suggests_the_right_one():
    data = reference()
    data["buttons"]["acept"] = 20
    err = error_for(data)
    assert err.key == "buttons.acept"
    assert "did you mean 'accept'" in str(err)


def test_missing_required_button():
    data = reference()
    del data["buttons"]["hangup"]
    assert error_for(data).key == "buttons.hangup"


def test_missing_section():
    data = reference()
    del data["keypad"]
    assert error_for(data).key == "keypad"


@pytest.mark.parametrize("value", [40, -1, 0, "GPIO5", True, 1.5])
def test_bad_gpio_numbers(value):
    data = reference()
    data["buttons"]["ready"] = value
    assert error_for(data).key == "buttons.ready"


def test_layout_must_match_rows_and_columns():
    data = reference()
    data["keypad"]["layout"] = ["123", "456", "789"]
    assert error_for(data).key == "keypad.layout"
    data["keypad"]["layout"] = ["12", "45", "78", "*0"]
    assert error_for(data).key == "keypad.layout"


@pytest.mark.parametrize(
    ("key", "value"),
    [("driver", "st7735"), ("address", 0x80), ("rotate", 4), ("i2c_port", "one")],
)
def test_display_values_are_checked(key, value):
    data = reference()
    data["display"][key] = value
    assert error_for(data).key == f"display.{key}"


def test_hold_keys_must_exist():
    data = reference()
    data["timing"]["hold_keys"] = ["#", "redial"]
    err = error_for(data)
    assert err.key == "timing.hold_keys"
    assert "redial" in str(err)


def test_all_problems_are_listed():
    data = reference()
    data["buttons"]["ready"] = 99
    data["display"]["rotate"] = 9
    err = error_for(data)
    assert err.key == "buttons.ready"
    assert "display.rotate" in str(err)


def test_defaults_for_optional_sections():
    data = reference()
    del data["display"], data["timing"]
    pinmap = parse_pinmap(data)
    assert pinmap.display.driver == "ssd1306"
    assert pinmap.timing.debounce_ms == 20


def test_bounce_time_zero_disables_gpiozero_filter():
    data = reference()
    data["timing"]["bounce_time_ms"] = 0
    assert parse_pinmap(data).timing.bounce_time_ms is None


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[buttons\nready = 5\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pinmap(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pinmap(tmp_path / "missing.toml")


def test_source_is_named_in_the_message(tmp_path):
    data = (HW / "pinmap-reference.toml").read_text().replace("ready = 5", "ready = 6")
    path = tmp_path / "dup.toml"
    path.write_text(data)
    with pytest.raises(ConfigError, match=r"dup\.toml"):
        load_pinmap(path)
