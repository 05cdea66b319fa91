"""Signaling URLs from edge, region or an explicit URL (pure; nothing is contacted)."""

from __future__ import annotations

import pytest

from appliance.errors import ConfigError
from appliance.signaling.urls import signaling_urls


def test_default_is_the_roaming_edge():
    assert signaling_urls() == ["wss://voice-js.roaming.twilio.com/signal"]


@pytest.mark.parametrize(
    ("region", "edge"),
    [
        ("ie1", "dublin"),
        ("us1", "ashburn"),
        ("de1-ix", "frankfurt-ix"),
        ("us2-tnx", "san-jose-ix"),
        ("gll", "roaming"),
        ("us-va", "ashburn"),  # a deprecated region, remapped first
        ("au", "sydney"),
    ],
)
def test_region_maps_to_its_edge(region, edge):
    assert signaling_urls(region=region) == [f"wss://voice-js.{edge}.twilio.com/signal"]


def test_several_edges_are_tried_in_order():
    assert signaling_urls(edge=["tokyo", "singapore"]) == [
        "wss://voice-js.tokyo.twilio.com/signal",
        "wss://voice-js.singapore.twilio.com/signal",
    ]


def test_an_explicit_url_wins_and_must_be_a_websocket_url():
    url = "ws://127.0.0.1:8080/signal"
    assert signaling_urls(signaling_url=url, edge="dublin") == [url]
    for bad in ("http://127.0.0.1/signal", "ws:///signal", "127.0.0.1:8080"):
        with pytest.raises(ConfigError, match="signaling_url"):
            signaling_urls(signaling_url=bad)
    with pytest.raises(ConfigError, match="signaling_url"):
        signaling_urls(signaling_url=[])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"region": "mars1"}, "region"),
        ({"region": "ie1", "edge": "dublin"}, "region"),
        ({"edge": "evil.example/x"}, "edge"),
        ({"edge": []}, "edge"),
    ],
)
def test_bad_edge_or_region_is_a_config_error(kwargs, key):
    with pytest.raises(ConfigError) as info:
        signaling_urls(**kwargs)
    assert info.value.key == key
