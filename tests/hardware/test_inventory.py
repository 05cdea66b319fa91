"""``appliance devices`` as a person runs it, on the rig's virtual sound cards.

The rig's PCMs (PulseAudio through ALSA's pulse plugin) are hinted as one
direction each, so the microphone must be listed under capture only and the
speaker under playback only, with the ids the config takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from appliance.hardware.alsa_devices import AlsaDeviceInfo
from appliance.hardware.inventory import format_devices
from appliance_dev.rig import VirtualCards


@pytest.fixture(scope="module")
def cards() -> Iterator[VirtualCards]:
    with VirtualCards(["Desk"]) as rig:
        yield rig


def devices(cards: VirtualCards, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "devices", *args],
        env={**os.environ, **cards.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lists_playback_and_capture_with_their_ids(cards: VirtualCards) -> None:
    result = devices(cards)
    assert result.returncode == 0, result.stderr
    playback, capture = result.stdout.split("capture (device.input_device):")
    assert playback.startswith("playback (device.output_device):")
    assert "alsa:Desk_spk" in playback and "alsa:Desk_mic" not in playback
    assert "alsa:Desk_mic" in capture and "alsa:Desk_spk" not in capture


def test_json_for_scripts(cards: VirtualCards) -> None:
    result = devices(cards, "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert {"id": "alsa:Desk_mic", "label": "Desk_mic"} in listing["capture"]
    assert "alsa:Desk_spk" in {d["id"] for d in listing["playback"]}
    assert "alsa:Desk_spk" not in {d["id"] for d in listing["capture"]}


def test_text_layout_says_when_a_direction_is_empty() -> None:
    text = format_devices(
        [AlsaDeviceInfo("alsa:plughw:CARD=Headset,DEV=0", "USB Headset", "output")]
    )
    assert text == (
        "playback (device.output_device):\n"
        "  alsa:plughw:CARD=Headset,DEV=0  USB Headset\n"
        "capture (device.input_device):\n"
        "  (none)\n"
    )
