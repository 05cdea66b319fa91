"""Local DTMF feedback on a clocked virtual speaker, decoded by the Q.24 detector.

Phone A sends digits in a call; A's speaker card is recorded. With
``fake_local_dtmf`` the feedback uses Twilio's off-standard pairs, which the
detector (ITU-T Q.24 limits, appliance_dev.dtmf_detect) must reject: no
digits. Without it, the Q.23 pairs come out and the detector finds exactly the
digits sent, in order. B gets the digits as ``dtmf`` events either way (they
travel by signaling, signaling-protocol.md §2).

Needs PulseAudio and the ALSA pulse plugin (the rig fixture fails otherwise).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from appliance import Device
from appliance.media.dtmf import duration
from appliance_dev.analysis import read_wav
from appliance_dev.dtmf_detect import detect_digits
from tests.conftest import make_token, scaled, wait_until

pytestmark = pytest.mark.slow  # virtual sound cards

DIGITS = "147*2580#369"


@pytest.mark.parametrize("fake", [True, False], ids=["fake", "standard"])
async def test_local_feedback_digits(rig, exchange, tmp_path, fake):
    rec = rig.record("A", tmp_path / "spkA.wav")
    await asyncio.sleep(scaled(0.3))  # no event says a recorder is connected
    common = {"signaling_url": exchange.url, "local_addresses": ["127.0.0.1"]}
    alice = Device(
        input_device="null",
        output_device=f"alsa:{rig.spk_pcm('A')}",
        fake_local_dtmf=fake,
        **common,
    )
    bob = Device(input_device="null", output_device="null", **common)
    # Only the digits on A's speaker: no answer chime or hang-up sound.
    alice.audio.outgoing(False)
    alice.audio.disconnect(False)
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    bob.on("incoming", incoming.put_nowait)
    received: list[str] = []
    try:
        await alice.setup(make_token("alice"))
        await bob.setup(make_token("bob"))
        conn = await alice.connect({"To": "bob"})
        call = await asyncio.wait_for(incoming.get(), scaled(5))
        call.on("dtmf", received.append)
        await call.accept()
        await wait_until(lambda: conn.status() == "open", 5.0)
        await asyncio.sleep(scaled(0.5))  # media flowing, the speaker open
        conn.send_digits(DIGITS)
        await wait_until(lambda: len(received) == len(DIGITS), duration(DIGITS) + 5)
        await asyncio.sleep(scaled(0.5))  # the last tone through the sink's buffers
        await conn.disconnect()
        await wait_until(lambda: call.status() == "closed", 5.0)
    finally:
        await alice.destroy()
        await bob.destroy()
        rec.stop()

    assert "".join(received) == DIGITS
    heard = read_wav(tmp_path / "spkA.wav")[0].astype(np.float64)
    # The feedback did play (about -23 dBFS per tone), whichever pairs it used.
    assert np.sqrt(np.mean(heard**2)) > 100
    found = "".join(event.digit for event in detect_digits(heard))
    print(f"fake={fake}: rms {np.sqrt(np.mean(heard**2)):.0f}, detected {found!r}")
    assert found == ("" if fake else DIGITS)
