"""device.audio on real (virtual) sound cards: dev/appliance_dev/rig.py, test-rig.md §2.

Needs PulseAudio and the ALSA pulse plugin; without them the rig fixture fails
with an install hint (these tests are the point of the rig, so no skip).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pytest

from appliance.media.frames import SAMPLE_RATE
from tests.conftest import installed_cards, local_device, make_token, scaled, wait_until
from tests.media.helpers import read_wav

pytestmark = pytest.mark.slow  # virtual sound cards


@pytest.fixture(scope="module")
def rig():
    with installed_cards(["A", "B", "C"]) as cards:
        yield cards


def band_level(samples: np.ndarray, hz: float, width: float = 25.0) -> float:
    """RMS (int16 units) of ``samples`` within ``hz`` ± ``width``."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    band = spectrum.copy()
    band[np.abs(freqs - hz) > width] = 0
    return float(np.sqrt(np.mean(np.fft.irfft(band, samples.size) ** 2)))


async def test_ring_and_call_on_two_cards_and_unplug_mid_call(rig, exchange, tmp_path):
    # A hot-pluggable card: a PCM that exists while its config file is listed.
    hot = tmp_path / "hot.conf"
    hot.write_text(
        f'pcm.Hot_spk {{ type pulse; server "{rig.server}"; device "spkC"; '
        'hint { show on description "Hot-plugged speaker|IOIDOutput" } }\n'
    )
    base_path = os.environ["ALSA_CONFIG_PATH"]
    os.environ["ALSA_CONFIG_PATH"] = f"{base_path}:{hot}"
    # Recorders first: a stream connecting later makes running clients underrun
    # (test-rig.md §8 gotcha 1).
    recs = {n: rig.record(n, tmp_path / f"spk{n}.wav") for n in "ABC"}
    await asyncio.sleep(scaled(0.3))  # no event says a recorder is connected
    alice = local_device(
        exchange.url,
        input_device="tone:1500",
    )
    bob = local_device(
        exchange.url,
        output_device="alsa:A_spk",
    )
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    bob.on("incoming", incoming.put_nowait)
    changes: list[list[Any]] = []
    bob.audio.on("device_change", changes.append)
    marks: dict[str, float] = {}
    try:
        await alice.setup(make_token("alice"))
        await bob.setup(make_token("bob"))
        # The first listing runs in a worker thread right after setup().
        await wait_until(
            lambda: "alsa:Hot_spk" in bob.audio.available_output_devices, 3.0
        )
        outputs = bob.audio.available_output_devices
        assert {"alsa:A_spk", "alsa:B_spk", "alsa:Hot_spk"} <= set(outputs)
        assert outputs["alsa:Hot_spk"].label == "Hot_spk"
        await bob.audio.ringtone_devices.set("alsa:B_spk")  # loudspeaker rings
        await bob.audio.speaker_devices.set("alsa:A_spk")  # handset talks
        bob.audio.outgoing(False)

        conn = await alice.connect({"To": "bob"})
        call = await asyncio.wait_for(incoming.get(), scaled(5))
        marks["ring"] = time.monotonic()
        await asyncio.sleep(1.0)  # it rings for a second
        await call.accept()
        marks["open"] = time.monotonic()
        await asyncio.sleep(1.0)  # talk on card A
        # While the call plays on card A, the ringtone card plays a test
        # sound at the same time.
        await bob.audio.ringtone_devices.test()
        # Now talk on the hot-plugged card, then unplug it mid-call.
        await bob.audio.speaker_devices.set("alsa:Hot_spk")
        # A new PulseAudio stream can take over a second to start on a loaded
        # machine (test-rig.md §2 gotcha 1); leave time for audio to arrive.
        await asyncio.sleep(scaled(2.0))
        os.environ["ALSA_CONFIG_PATH"] = base_path
        await wait_until(lambda: changes, 4.0)
        marks["unplugged"] = time.monotonic()
        await asyncio.sleep(1.0)  # the call goes on without the card
        assert call.status() == "open" and conn.status() == "open"
        await conn.disconnect()
        await wait_until(lambda: call.status() == "closed", 5.0)
    finally:
        os.environ["ALSA_CONFIG_PATH"] = base_path
        await alice.destroy()
        await bob.destroy()
        for rec in recs.values():
            rec.stop()

    assert [d.device_id for d in changes[0]] == ["alsa:Hot_spk"]
    assert bob.audio.speaker_devices.ids == ("default",)
    a, b, c = (read_wav(tmp_path / f"spk{n}.wav")[0] for n in "ABC")
    # Card B (ringtone): the US ring (440+480 Hz) while ringing, no call tone.
    assert band_level(b, 460, 40) > 1000
    assert band_level(b, 1500) < 0.05 * band_level(b, 460, 40)
    # ...and the test chime (660/990 Hz) during the call.
    assert band_level(b, 990) > 300
    # Card A (speaker): the far end's 1.5 kHz, and no ring.
    assert band_level(a, 1500) > 1000
    assert band_level(a, 460, 40) < 0.05 * band_level(a, 1500)
    # The hot-plugged card got call audio while it was there.
    assert band_level(c, 1500) > 1000
    # After the unplug the call fell back to the default (card A): the last
    # second before the hang-up has the far end's tone on A.
    tail = a[-int(1.5 * SAMPLE_RATE) :]
    assert band_level(tail, 1500) > 1000
