"""``appliance check`` on the simulator's hardware: mock pins, a luma dummy
OLED and the clocked virtual sound cards of the rig (dev/appliance_dev/rig.py).

The finger presses each key when the check asks for it; the rig feeds a tone
of known level into one microphone and records both speakers, so the tone the
check plays is really heard and the level it reports is really measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from luma.core.device import dummy
from PIL import Image, ImageChops

from appliance import app
from appliance.config import load_config
from appliance.hardware.display import register_display_driver
from appliance.media.frames import SAMPLE_RATE
from appliance.media.levels import rms_dbfs
from appliance.selftest.plan import AskInput, Outcome
from appliance.ui.notices import render_check_summary, render_test_pattern
from appliance_dev.analysis import read_wav, write_wav
from appliance_dev.rig import VirtualCards
from tests.conftest import scaled, wait_until

pytestmark = pytest.mark.slow  # virtual sound cards, real time

HW = Path(__file__).resolve().parents[2] / "hw"

#: The level fed into phone A's microphone, RMS.
FEED_DBFS = -20.0


class RecordingDummy(dummy):
    """luma's dummy device, keeping every frame it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames: list[Image.Image] = []

    def display(self, image: Image.Image) -> None:
        super().display(image)
        self.frames.append(self.image.copy())


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def sine(hz: float, dbfs: float, seconds: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    peak = math.sqrt(2) * 10 ** (dbfs / 20) * 32768
    return np.round(peak * np.sin(2 * math.pi * hz * t)).astype(np.int16)


def tone_level(samples: np.ndarray, hz: float) -> tuple[float, float]:
    """(seconds, RMS dBFS) of the stretch of 50 ms windows holding the tone."""
    window = SAMPLE_RATE // 20
    levels = [
        rms_dbfs(samples[i : i + window])
        for i in range(0, samples.size - window, window)
    ]
    loud = [db for db in levels if db > -40]
    # The tone, not noise or another frequency: its band holds the energy.
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    band = power[np.abs(freqs - hz) < 50].sum() / power.sum()
    assert band > 0.5, f"only {band:.2f} of the energy near {hz} Hz"
    return len(loud) / 20, float(np.median(loud)) if loud else -120.0


async def finger(check: app.HardwareCheck, commands: asyncio.Queue[str]) -> list[str]:
    """Press what the check asks for; skip Vol+ with Enter, the hook with q."""
    mock = check.panel.mock if check.panel is not None else None
    assert mock is not None
    test = check.runner.test
    done: list[str] = []
    while not test.finished:
        await wait_until(lambda: test.finished or test.expecting() is not None, 30.0)
        step = test.expecting()
        if step is None:
            break
        if step == AskInput("button", "vol_up"):
            commands.put_nowait("")
        elif step.kind == "hook":
            commands.put_nowait("q")
        elif step.kind == "key":
            await mock.tap_key(step.name)
        else:
            await mock.tap_button(step.name)
        done.append(step.name)
        await wait_until(lambda s=step: test.expecting() != s, 5.0)  # type: ignore[misc]
    return done


async def lines(queue: asyncio.Queue[str]) -> AsyncIterator[str]:
    while True:
        yield await queue.get()


async def test_check_plays_records_blinks_draws_and_asks_every_key(
    rig: VirtualCards, tmp_path: Path
) -> None:
    oleds: list[RecordingDummy] = []

    def recording_oled(spec: Any) -> RecordingDummy:
        oleds.append(RecordingDummy(width=spec.width, height=spec.height, mode="1"))
        return oleds[-1]

    register_display_driver("test-recorder", recording_oled)
    config_file = tmp_path / "appliance.toml"
    config_file.write_text(
        f'[ui]\nenabled = true\npinmap = "{HW / "pinmap-reference.toml"}"\n'
        'pin_factory = "mock"\ndisplay_driver = "dummy"\n'
    )
    config = load_config([config_file])
    config = dataclasses.replace(
        config, ui=dataclasses.replace(config.ui, display_driver="test-recorder")
    )
    write_wav(tmp_path / "feed.wav", sine(440, FEED_DBFS, 60))
    # Feeder and recorders first: a stream connecting later makes running
    # clients underrun (test-rig.md §8 gotcha 1).
    feeder = rig.feed("A", tmp_path / "feed.wav")
    recorders = [rig.record(n, tmp_path / f"spk{n}.wav") for n in "AB"]
    await asyncio.sleep(scaled(0.5))  # no event says a recorder is connected
    out = io.StringIO()
    commands: asyncio.Queue[str] = asyncio.Queue()
    try:
        async with contextlib.AsyncExitStack() as stack:
            check = await app.open_check(
                config,
                stack,
                out=out,
                key_timeout_s=scaled(10),
                commands=lines(commands),
            )
            assert check.panel is not None and check.panel.mock is not None
            ringer = check.panel.mock.pin("ringer")
            status = check.panel.mock.pin("status")
            ringer.clear_states()
            status.clear_states()
            pressed = asyncio.create_task(finger(check, commands))
            try:
                finished = await asyncio.wait_for(check.runner.run(), scaled(90))
            except TimeoutError:
                raise AssertionError("check stuck:\n" + out.getvalue()) from None
            done = await pressed
    finally:
        for rec in recorders:
            rec.stop()
        feeder.stop()

    report = out.getvalue()
    results = {r.part: r for r in finished.results}
    # Sound: one name per device; the rig's "pulse" route is not hardware.
    assert [p for p in results if p.startswith(("output", "input"))] == [
        "output alsa:A_spk",
        "output alsa:B_spk",
        "input alsa:A_mic",
        "input alsa:B_mic",
    ]
    level = results["input alsa:A_mic"].level_dbfs
    assert level is not None and abs(level - FEED_DBFS) < 1.0, report
    assert results["input alsa:A_mic"].outcome is Outcome.PASS
    # Nothing feeds B's microphone: digital silence fails the check.
    assert results["input alsa:B_mic"].outcome is Outcome.FAIL
    assert results["input alsa:B_mic"].level_dbfs == -120.0
    assert not finished.passed
    for name in "AB":
        seconds, db = tone_level(read_wav(tmp_path / f"spk{name}.wav")[0], 1000)
        assert 0.8 <= seconds <= 1.3, (name, seconds)
        assert abs(db - -15.0) < 1.0, (name, db)
    # The LEDs blinked (on and off at least twice each).
    for pin in (ringer, status):
        assert sum(1 for s in pin.states if s.state) >= 2, pin.states
        assert not pin.state
    # Every key and button was asked for in turn and reached the check.
    buttons = ["ready", "accept", "hangup", "mute", "vol_up", "vol_down", "hook"]
    assert done == [*"123456789*0#", *buttons]
    keys = [r for r in finished.results if r.part.startswith(("key", "button"))]
    assert len(keys) == 18
    assert [r.part for r in keys if r.outcome is not Outcome.PASS] == ["button vol_up"]
    assert results["hook switch"].outcome is Outcome.SKIPPED
    # The screen drew the test pattern first and the summary last.
    frames = oleds[0].frames
    assert same(frames[0], render_test_pattern())
    assert same(frames[-1], render_check_summary(23, 1, 2, "input alsa:B_mic"))
    assert "1 part failed" in report and "-120.0 dBFS" in report


async def test_the_check_command_skips_from_the_terminal_and_fails_on_silence(
    tmp_path: Path,
) -> None:
    # `appliance check` as a person runs it: a process reading the terminal.
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'[ui]\nenabled = true\npinmap = "{HW / "pinmap-reference.toml"}"\n'
        'pin_factory = "mock"\ndisplay_driver = "dummy"\n'
        f'screen_file = "{tmp_path / "screen.png"}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "check",
        "--config",
        str(config),
        "--output",
        "null",
        "--input",
        "null",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # "q": skip every key and button (typed before they are asked for).
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(b"q\n"), scaled(80))
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = stdout.decode()
    assert process.returncode == 1, report + stderr.decode()
    assert "fail    input null: -120.0 dBFS" in report
    assert "pass    output null" in report and "pass    LED status" in report
    assert "skipped key 5" in report and "skipped hook switch" in report
    assert report.endswith("1 part failed\n")
    with Image.open(tmp_path / "screen.png") as shown:
        assert same(shown, render_check_summary(4, 1, 19, "input null"))
