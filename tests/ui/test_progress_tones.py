"""Dial tone and ringback from the front panel, heard in a recording of the
phone's output (real Device, exchange, mock pins, file sink)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.audio.sounds import progress_sound
from appliance.exchange.server import ExchangeServer
from appliance.media.frames import SAMPLE_RATE
from appliance.media.levels import rms_dbfs
from appliance.phone.connection import Connection
from appliance.ui.panel import Panel
from appliance.ui.view import PanelState
from tests.conftest import local_device, make_token, wait_until
from tests.media.helpers import read_wav
from tests.ui.test_controller import panel_phone

pytestmark = pytest.mark.slow

WAV_HEADER_BYTES = 44


def seconds_recorded(path: Path) -> float:
    if not path.exists():
        return 0.0
    return max(0, path.stat().st_size - WAV_HEADER_BYTES) / 2 / SAMPLE_RATE


def peaks(samples: np.ndarray, count: int) -> list[float]:
    """The ``count`` strongest frequencies (Hz), 10 Hz apart at least."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / SAMPLE_RATE)
    found: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[index] - f) > 10 for f in found):
            found.append(float(freqs[index]))
        if len(found) == count:
            break
    return sorted(found)


def test_the_sounds_follow_the_country():
    us = progress_sound("dialtone", "US")
    assert us.loop and us.duration_s == 1.0
    assert peaks(us.samples, 2) == pytest.approx([350, 440], abs=2)
    # The loop joins without a click: the last sample leads into the first.
    assert abs(int(us.samples[-1]) - int(us.samples[0])) < 400
    gb = progress_sound("ringback", "GB")
    assert gb.duration_s == pytest.approx(3.0)  # 0.4 on, 0.2 off, 0.4 on, 2 off
    assert peaks(gb.samples, 2) == pytest.approx([400, 450], abs=2)
    assert rms_dbfs(gb.samples[int(1.1 * SAMPLE_RATE) :]) < -80  # the long pause
    with pytest.raises(KeyError):
        progress_sound("busy")


async def test_dial_tone_until_the_first_key(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    wav = tmp_path / "out.wav"
    async with panel_phone(
        exchange, "alice", Panel(), output_device=f"file:{wav}"
    ) as phone:
        assert phone.controller.progress_tone is None
        phone.hw.press_button("hook")  # the handset is lifted
        await phone.wait_state(PanelState.DIALING)
        await wait_until(lambda: phone.controller.progress_tone == "dialtone")
        start = seconds_recorded(wav)
        await wait_until(lambda: seconds_recorded(wav) >= start + 1.0)
        lifted_until = seconds_recorded(wav)
        await phone.hw.tap_key("5")
        await wait_until(lambda: phone.controller.progress_tone is None)
        assert phone.panel.view().dial_string == "5"
        phone.hw.release_button("hook")
        await phone.wait_state(PanelState.IDLE)
    samples, _rate, _channels = read_wav(wav)
    tone = samples[int(start * SAMPLE_RATE) : int(lifted_until * SAMPLE_RATE)]
    assert tone.size >= 0.6 * SAMPLE_RATE
    assert peaks(tone, 2) == pytest.approx([350, 440], abs=3)


async def test_ringback_while_the_far_end_rings_and_no_early_media(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    wav = tmp_path / "out.wav"
    callee = local_device(exchange.url, input_device="tone:660")
    incoming: list[Connection] = []
    callee.on("incoming", incoming.append)
    async with panel_phone(
        exchange, "alice", Panel(directory={"7": "bob"}), output_device=f"file:{wav}"
    ) as phone:
        try:
            await callee.setup(make_token("bob"))
            await phone.dial("7")
            await phone.hw.tap_button("accept")
            await wait_until(lambda: phone.controller.progress_tone == "ringback")
            start = seconds_recorded(wav)
            await wait_until(lambda: seconds_recorded(wav) >= start + 1.5)
            conn = phone.controller.call
            assert conn is not None and incoming
            # The callee sends nothing before it answers.
            assert conn.receive_codec is None
            heard = seconds_recorded(wav)
            await incoming[0].accept()
            await phone.wait_state(PanelState.IN_CALL, limit=10.0)
            assert phone.controller.progress_tone is None
        finally:
            await callee.destroy()
    samples, _rate, _channels = read_wav(wav)
    ringing = samples[int(start * SAMPLE_RATE) : int(heard * SAMPLE_RATE)]
    assert ringing.size >= SAMPLE_RATE
    # US ringback 440+480 Hz, on for the first 2 s of its 6 s period.
    assert peaks(ringing, 2) == pytest.approx([440, 480], abs=3)
