"""Speech both ways at once over the exchange, on clocked virtual sound cards.

Phone A's and phone B's microphones get different espeak-ng sentences at the
same moment; each speaker is recorded. Each recording must contain the far
side's speech (aligned by cross-correlation; PESQ-WB when the ``pesq`` package
is installed, else windowed correlation) and not the phone's own speech.

Needs PulseAudio, the ALSA pulse plugin and espeak-ng (``make`` installs them);
without them the rig fixture fails with an install hint instead of skipping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from appliance import Device
from appliance_dev.rig import (
    RATE,
    align,
    normalized_correlation,
    pesq_wb,
    read_wav,
    speech,
    windowed_correlation,
    write_wav,
)
from tests.conftest import local_device, make_token, scaled, wait_until

pytestmark = pytest.mark.slow  # virtual sound cards

SENTENCES = {
    "A": "The quick brown fox jumps over the lazy dog near the river bank.",
    "B": "Please call Stella and ask her to bring these things from the store.",
}
VOICES = {"A": "en-us", "B": "en-gb+f3"}
#: Lowest accepted score. Opus over loopback measured PESQ-WB 4.3-4.5 and
#: windowed correlation > 0.95 here; these leave room for xruns on a busy box.
MIN_PESQ_WB = 3.0
MIN_CORRELATION = 0.7
#: Unrelated speech correlates around 0.05-0.1 (test-rig.md §2).
MAX_CROSSTALK = 0.3
#: A stream connecting to or leaving the rig makes a running ALSA client
#: underrun (test-rig.md §8, rig gotcha 1), which cuts into the speech a
#: speaker is playing. So the feeders connect before the phones open their
#: cards, with this much silence before the speech (the call is set up in it,
#: scaled for slow machines)...
FEED_LEAD_S = 5.0
#: ...and leave together, this long (scaled) after the longer sentence, once both
#: speakers have played the far side's speech to its end.
FEED_TAIL_S = 2.0


def quiet(device: Device) -> None:
    """No ring, chimes or disconnect sound: only call audio on the speakers."""
    device.audio.incoming(False)
    device.audio.outgoing(False)
    device.audio.disconnect(False)


async def test_speech_both_ways_at_once(rig, exchange, tmp_path):
    said = {
        n: speech(SENTENCES[n], tmp_path / f"say{n}.wav", voice=VOICES[n], lead_s=0.5)
        for n in "AB"
    }
    lead = int(scaled(FEED_LEAD_S) * RATE)
    tail = int(scaled(FEED_TAIL_S) * RATE)
    length = lead + max(s.size for s in said.values()) + tail
    for n, samples in said.items():
        feed = np.zeros(length, np.int16)
        feed[lead : lead + samples.size] = samples
        write_wav(tmp_path / f"feed{n}.wav", feed)
    # Recorders and feeders first: a stream connecting later makes running ALSA
    # clients underrun (test-rig.md §8 gotcha 1).
    recs = {n: rig.record(n, tmp_path / f"spk{n}.wav") for n in "AB"}
    await asyncio.sleep(scaled(0.3))  # no event says a recorder is connected
    loop = asyncio.get_running_loop()
    feeders = [rig.feed(n, tmp_path / f"feed{n}.wav") for n in "AB"]
    speech_at = loop.time() + lead / RATE
    phones = {
        n: local_device(
            exchange.url,
            input_device=f"alsa:{rig.mic_pcm(n)}",
            output_device=f"alsa:{rig.spk_pcm(n)}",
        )
        for n in "AB"
    }
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    phones["B"].on("incoming", incoming.put_nowait)
    try:
        for n, phone in phones.items():
            quiet(phone)
            await phone.setup(make_token(f"phone{n}"))
        conn = await phones["A"].connect({"To": "phoneB"})
        call = await asyncio.wait_for(incoming.get(), scaled(5))
        await call.accept()
        await wait_until(lambda: conn.status() == "open", 5.0)
        await asyncio.sleep(scaled(1.0))  # media flowing, devices open
        assert loop.time() < speech_at, "the call was not up before the speech"
        for feeder in feeders:
            await asyncio.to_thread(feeder.wait, scaled(length / RATE + 10))
        assert call.status() == "open" and conn.status() == "open"
        await conn.disconnect()
        await wait_until(lambda: call.status() == "closed", 5.0)
    finally:
        for phone in phones.values():
            await phone.destroy()
        for process in (*feeders, *recs.values()):
            process.stop()

    heard = {n: read_wav(tmp_path / f"spk{n}.wav")[0].astype(np.float64) for n in "AB"}
    for me, far in (("A", "B"), ("B", "A")):
        rec = heard[me]
        found = align(said[far], rec)
        score = windowed_correlation(said[far], rec, found.lag)
        assert score > MIN_CORRELATION, (me, far, found, score)
        mos = pesq_wb(said[far], rec[found.lag : found.lag + said[far].size])
        if mos is not None:
            assert mos > MIN_PESQ_WB, (me, far, mos)
        # No crosstalk: my own speech, wherever it fits best, is not there.
        own = align(said[me], rec)
        print(
            f"{far}->{me}: lag {1000 * found.lag / RATE:.0f} ms, corr "
            f"{found.correlation:.3f}, windowed {score:.3f}, PESQ-WB {mos}, "
            f"own speech {own.correlation:.3f}"
        )
        assert abs(own.correlation) < MAX_CROSSTALK, (me, own)
        # ...and the far side's speech really is the loud part of my speaker.
        assert normalized_correlation(
            said[far], rec[found.lag : found.lag + said[far].size]
        ) > abs(own.correlation)
