"""Option validation and the documented option table."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.phone.options import OPTION_STATUS, DeviceOptions, parse_options

DOCS = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def test_every_option_has_a_status_and_is_documented():
    names = {f.name for f in fields(DeviceOptions)}
    assert names == set(OPTION_STATUS)
    text = DOCS.read_text()
    for name in names:
        assert f"`{name}`" in text, name


def test_seed_defaults():
    opts = parse_options({})
    assert opts.allow_incoming_while_busy is False
    assert opts.audio_constraints is True
    assert opts.backoff_max_ms == 20_000
    assert opts.close_protection is False
    assert opts.debug is False
    assert opts.dscp is True
    assert opts.signaling_dscp == 26  # AF31, as desk phones mark signaling
    assert opts.enable_ringing_state is False
    assert opts.fake_local_dtmf is False
    assert opts.region == "gll"
    assert opts.rtc_configuration == ()
    assert opts.sounds is None
    assert opts.warnings is True
    assert opts.urls() == ["wss://voice-js.roaming.twilio.com/signal"]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"backoff_max_ms": 2999}, "backoff_max_ms"),
        ({"backoff_max_ms": "5000"}, "backoff_max_ms"),
        ({"debug": "yes"}, "debug"),
        ({"allow_incoming_while_busy": 1}, "allow_incoming_while_busy"),
        ({"signaling_url": "http://127.0.0.1/signal"}, "signaling_url"),
        ({"region": "mars1"}, "region"),
        ({"signaling_dscp": 64}, "signaling_dscp"),
        ({"signaling_dscp": True}, "signaling_dscp"),
        ({"region": "ie1", "edge": "dublin"}, "region"),
        ({"local_addresses": ["localhost"]}, "local_addresses"),
        ({"codec_preferences": ["g729"]}, "codec_preferences"),
        ({"sounds": {"incomming": "/x.wav"}}, "sounds.incomming"),
        (
            {"rtc_configuration": {"ice_servers": [{"urls": "http://x"}]}},
            "rtc_configuration.ice_servers[0]",
        ),
        (
            {"rtc_configuration": {"ice_servers": [{"urls": "turn:x:3478"}]}},
            "rtc_configuration.ice_servers[0]",
        ),
        ({"enable_ringing": True}, "enable_ringing"),
    ],
)
def test_invalid_options_name_the_key(options, key):
    with pytest.raises(ConfigError) as info:
        parse_options(options)
    assert info.value.key == key


def test_unknown_option_suggests_the_right_name():
    with pytest.raises(ConfigError, match="did you mean 'enable_ringing_state'"):
        parse_options({"enable_ringing": True})


def test_edges_and_regions_map_like_the_sdk():
    assert parse_options({"edge": "ashburn"}).urls() == [
        "wss://voice-js.ashburn.twilio.com/signal"
    ]
    assert parse_options({"edge": ["dublin", "frankfurt"]}).urls() == [
        "wss://voice-js.dublin.twilio.com/signal",
        "wss://voice-js.frankfurt.twilio.com/signal",
    ]
    assert parse_options({"region": "ie1"}).urls() == [
        "wss://voice-js.dublin.twilio.com/signal"
    ]
    assert parse_options({"region": "us-va"}).urls() == [
        "wss://voice-js.ashburn.twilio.com/signal"
    ]
    assert parse_options({"signaling_url": "ws://127.0.0.1:9/signal"}).urls() == [
        "ws://127.0.0.1:9/signal"
    ]


def test_ice_servers_are_parsed():
    opts = parse_options(
        {
            "rtc_configuration": {
                "ice_servers": [
                    {"urls": ["stun:127.0.0.1:3478"]},
                    {"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "p"},
                ]
            }
        }
    )
    assert [s.urls for s in opts.rtc_configuration] == [
        ("stun:127.0.0.1:3478",),
        ("turn:127.0.0.1:3478",),
    ]


async def test_debug_option_is_undone_when_the_device_is_destroyed():
    import logging

    from appliance.phone.device import Device

    engine_log = logging.getLogger("appliance")
    before = engine_log.level
    device = Device(debug=True)
    assert engine_log.getEffectiveLevel() == logging.DEBUG
    await device.destroy()
    assert engine_log.level == before  # the process's logging is as it was
