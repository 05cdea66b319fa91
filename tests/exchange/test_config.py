"""Exchange configuration: TOML file, command-line values, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.exchange.config import (
    ExchangeConfig,
    build_config,
    load_config_file,
    parse_listen,
)

ACCOUNT = "AC" + "a" * 32
ACCOUNT2 = "AC" + "c" * 32
KEY = "SK" + "b" * 32
KEY2 = "SK" + "d" * 32

FILE = f"""
[exchange]
listen = "127.0.0.1:9000"
ring_timeout = 12
heartbeat_interval = 2.5
media_addresses = ["127.0.0.1"]
gateway_name = "bench"
resume_grace = 12

[[accounts]]
sid = "{ACCOUNT}"
auth_token = "tok"
[[accounts.api_keys]]
sid = "{KEY}"
secret = "one"

[[accounts]]
sid = "{ACCOUNT2}"
[[accounts.api_keys]]
sid = "{KEY2}"
secret = "two"
"""


def write_private(path: Path, text: str) -> None:
    """A config file with secrets, as it must be: mode 0600."""
    path.write_text(text)
    path.chmod(0o600)


def test_file_with_several_accounts(tmp_path):
    path = tmp_path / "exchange.toml"
    write_private(path, FILE)
    config = load_config_file(path)
    assert (config.host, config.port) == ("127.0.0.1", 9000)
    assert config.ring_timeout == 12
    assert config.heartbeat_interval == 2.5
    assert config.media_addresses == ("127.0.0.1",)
    assert config.gateway_name == "bench"
    assert config.resume_grace == 12
    assert ExchangeConfig().resume_grace == 30  # when the file does not say
    assert config.keyring.find_api_key(KEY) == (ACCOUNT, "one")
    assert config.keyring.find_api_key(KEY2) == (ACCOUNT2, "two")
    assert config.keyring.auth_tokens == {ACCOUNT: "tok"}


def test_command_line_overrides_and_adds_to_file(tmp_path):
    path = tmp_path / "exchange.toml"
    write_private(path, FILE)
    key3 = "SK" + "f" * 32
    config = build_config(
        config_file=path,
        listen="[::1]:0",
        account_sid=ACCOUNT,
        api_key=key3,
        api_secret="three",
        ring_timeout=5,
    )
    assert (config.host, config.port) == ("::1", 0)
    assert config.ring_timeout == 5
    assert config.keyring.find_api_key(key3) == (ACCOUNT, "three")
    assert config.keyring.find_api_key(KEY) == (ACCOUNT, "one")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[exchange]\nring_timout = 3\n", "exchange.ring_timout"),
        ("[exchange]\nheartbeat_interval = 20\n", "exchange.heartbeat_interval"),
        ("[exchange]\nlisten = 'nope'\n", "exchange.listen"),
        ("[exchange]\nresume_grace = 31\n", "exchange.resume_grace"),
        ("[exchange]\nresume_grace = 2.5\n", "exchange.resume_grace"),
        ("[[accounts]]\nsid = 'AC12'\nauth_token = 'x'\n", "accounts[0].sid"),
        (
            f"[[accounts]]\nsid = '{ACCOUNT}'\n[[accounts.api_keys]]\nsid = '{KEY}'\n",
            "accounts[0].api_keys[0].secret",
        ),
        (f"[[accounts]]\nsid = '{ACCOUNT}'\n", "accounts[0]"),
        ("this is not toml", "config"),
    ],
)
def test_file_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    write_private(path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.key == key


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path / "missing.toml")
    assert info.value.key == "config"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "account_sid"),
        ({"account_sid": ACCOUNT}, "api_key"),
        ({"account_sid": "AC1", "api_key": KEY, "api_secret": "s"}, "account_sid"),
        ({"account_sid": ACCOUNT, "api_key": "SK1", "api_secret": "s"}, "api_key"),
        ({"account_sid": ACCOUNT, "api_key": KEY}, "api_secret"),
        ({"api_key": KEY, "api_secret": "s"}, "account_sid"),
        ({"auth_token": "t"}, "account_sid"),
    ],
)
def test_command_line_errors_name_the_option(options, key):
    with pytest.raises(ConfigError) as info:
        build_config(**options)
    assert info.value.key == key


def test_media_addresses_default_to_loopback_only_on_loopback():
    assert ExchangeConfig(host="127.0.0.1").effective_media_addresses == ("127.0.0.1",)
    assert ExchangeConfig(host="0.0.0.0").effective_media_addresses is None
    assert ExchangeConfig(
        host="0.0.0.0", media_addresses=("10.0.0.2",)
    ).effective_media_addresses == ("10.0.0.2",)


@pytest.mark.parametrize("text", ["host", ":80", "h:99999", "h:x"])
def test_parse_listen_rejects(text):
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_file_errors_are_all_reported_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    write_private(
        path,
        "[exchange]\nring_timout = 3\nheartbeat_interval = 20\nlisten = 8080\n"
        "[[accounts]]\nsid = 'AC12'\nauth_token = ''\n"
        f"[[accounts]]\nsid = '{ACCOUNT}'\n[[accounts.api_keys]]\nsid = '{KEY}'\n"
        "secret = true\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert sorted(key for key, _ in info.value.problems) == [
        "accounts[0].auth_token",
        "accounts[0].sid",
        "accounts[1].api_keys[0].secret",
        "exchange.heartbeat_interval",
        "exchange.listen",
        "exchange.ring_timout",
    ]
    assert "did you mean 'ring_timeout'?" in str(info.value)
    assert len(str(info.value).splitlines()) == 6


def test_heartbeat_interval_is_strictly_a_number(tmp_path):
    path = tmp_path / "bad.toml"
    write_private(path, '[exchange]\nheartbeat_interval = "5"\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.key == "exchange.heartbeat_interval"
