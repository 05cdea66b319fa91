"""The service configuration schema: every error at once, strict types, and
``appliance show-config`` writing TOML that reads back to the same values."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main
from appliance.config import (
    dump_config,
    load_config,
    merge_layers,
    parse_config,
)
from appliance.errors import ConfigError

HW = Path(__file__).resolve().parents[1] / "hw"

LAYER = f"""
[phone]
token_file = "/run/token"

[device]
edge = ["dublin", "frankfurt"]
codec_preferences = ["pcmu"]
backoff_max_ms = 5000
close_protection = "Call in progress"
sounds = {{ incoming = "/usr/share/ring.wav" }}
rtc_configuration = {{ ice_servers = [{{ urls = ["stun:127.0.0.1:3478"] }}] }}

[log]
level = "debug"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "terminal"
max_fps = 12.5
country = "GB"
ignore_after_rings = 4

[ui.directory]
"200" = "reception"
"31" = "echo"
"""


def write(tmp_path: Path, text: str, name: str = "layer.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def show_config(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, str]:
    argv = ["show-config"]
    for path in paths:
        argv += ["--config", str(path)]
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out if status == 0 else captured.err


def assert_contains(document: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every value of ``expected`` is in ``document`` (nested tables too)."""
    for key, value in expected.items():
        if isinstance(value, dict) and isinstance(document[key], dict):
            assert_contains(document[key], value)
        else:
            assert document[key] == value, key


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[device]\ndebug = "yes"\nbackoff_max_ms = 100\n'
        '[ui]\ncolour = "red"\npin_factory = "gpio"\n[log]\nlevel = "loud"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config([path])
    keys = [key for key, _ in info.value.problems]
    assert sorted(keys) == [
        "device.backoff_max_ms",
        "device.debug",
        "log.level",
        "ui.colour",
        "ui.pin_factory",
    ]
    text = str(info.value)
    assert len(text.splitlines()) == 5
    assert "ui.colour: unknown key; did you mean 'country'?" in text
    assert info.value.key == keys[0] and info.value.reason == info.value.problems[0][1]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[device]\ndebug = "yes"\n', "device.debug"),
        ('[device]\nbackoff_max_ms = "5000"\n', "device.backoff_max_ms"),
        ('[device]\nedge = ""\n', "device.edge"),
        ("[ui]\nenabled = 1\n", "ui.enabled"),
        ('[ui]\nmax_dial_length = "20"\n', "ui.max_dial_length"),
        ('[ui]\nmax_fps = "10"\n', "ui.max_fps"),
        ("[ui]\ncountry = 44\n", "ui.country"),
        ("[ui]\ndirectory = 5\n", "ui.directory"),
        ('[ui.directory]\n"12" = 5\n', "ui.directory.12"),
        ('[ui.directory]\n"12" = "not a name"\n', "ui.directory.12"),
        ('[ui]\ndisplay_driver = "vga"\n', "ui.display_driver"),
        ("[phone]\ntoken_file = 1\n", "phone.token_file"),
        ("phone = 3\n", "phone"),
    ],
)
def test_types_are_strict(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([write(tmp_path, text)])
    assert [k for k, _ in info.value.problems] == [key]


def test_parsed_values_only(tmp_path: Path) -> None:
    config = load_config([write(tmp_path, LAYER)])
    assert config.ui.display_driver == "terminal"
    assert config.ui.directory == {"200": "reception", "31": "echo"}
    assert config.ui.ignore_after_rings == 4
    assert config.device.codec_preferences == ("pcmu",)
    assert config.token_file == Path("/run/token")
    assert not hasattr(config, "device_raw") and not hasattr(config, "ui_raw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ui.enabled = False  # type: ignore[misc]


def test_show_config_is_toml_that_reads_back_to_the_merged_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LAYER)
    status, out = show_config(capsys, path)
    assert status == 0
    shown = tomllib.loads(out)
    # Every value of the merged layers is there, defaults included...
    merged, _sources = merge_layers([path])
    assert_contains(shown, merged)
    assert shown["device"]["warnings"] is True  # a default no layer sets
    assert shown["ui"]["directory"] == {"200": "reception", "31": "echo"}
    # ...and the output, read as a config, is the same configuration.
    config = load_config([path])
    assert parse_config(shown) == dataclasses.replace(config, sources=())
    assert f"# layers: <default>, {path}" in out


def test_show_config_of_the_defaults_reads_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The layer may be absent (as the provisioned one is before provisioning).
    status = main(["show-config", "--config-if-exists", str(tmp_path / "x.toml")])
    out = capsys.readouterr().out
    assert status == 0
    assert parse_config(tomllib.loads(out)) == dataclasses.replace(
        load_config([]), sources=()
    )


def test_show_config_masks_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[device.rtc_configuration]\nice_servers = [{ urls = "
        '"turn:127.0.0.1:3478", username = "u", credential = "hunter2" }]\n',
    )
    path.chmod(0o600)  # it holds a secret: refused if others may read it
    config = load_config([path])
    assert config.device.rtc_configuration[0].credential == "hunter2"
    text = dump_config(config)
    assert "hunter2" not in text
    assert "********" in text


def test_show_config_refuses_a_bad_ui_key_like_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[ui]\npin_factori = "mock"\n[device]\ndebug = 1\n')
    status, err = show_config(capsys, path)
    assert status == 2
    assert "ui.pin_factori: unknown key; did you mean 'pin_factory'?" in err
    assert "device.debug" in err  # both sections reported at once
    assert main(["run", "--config", str(path)]) == 2
    assert "ui.pin_factori" in capsys.readouterr().err


def test_update_section_is_off_without_a_url_and_names_bad_keys(tmp_path):
    assert parse_config({}).update.enabled is False
    good = tmp_path / "good.toml"
    good.write_text(
        '[update]\nurl = "https://updates.example/phone/"\npolicy = "window"\n'
        'window = "22:30-04:00"\n'
    )
    config = load_config([good])
    assert config.update.enabled and config.update.url.endswith("/phone")
    policy = config.update.machine_policy()
    assert policy.window == (22 * 60 + 30, 4 * 60)
    assert parse_config(tomllib.loads(dump_config(config))).update == config.update
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[update]\nurl = "ftp://x"\npolicy = "sometimes"\nwindow = "25:00-01:00"\n'
        "check_interval_s = 0\nrepo = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config([bad])
    text = str(info.value)
    for key in ("url", "policy", "window", "check_interval_s", "repo"):
        assert f"update.{key}" in text, text
