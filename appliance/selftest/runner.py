"""The asyncio adapter of the self-test: plays, records, blinks, draws, listens.

:class:`CheckRunner` drives a :class:`~appliance.selftest.plan.SelfTest`: it
performs each step the core starts, feeds the core the front panel's inputs
and the terminal's skip commands, and sleeps until the core's next deadline.
It is handed its parts (the composition root, ``appliance.app``, builds
them): the panel's inputs and LEDs (:class:`~appliance.hardware.ports.PanelIO`),
the OLED, functions opening audio devices by id, and where to write.

Audio. A tone is written in 20 ms frames on a fixed schedule
(:class:`~appliance.media.devices.FramePacer`) a few frames ahead, because a
sink drops the oldest audio when it is handed more than it buffers; closing
the sink plays out what is queued. A recording discards its first 100 ms
(a stream that has just started may deliver its ring's stale start) and
measures the RMS level of the next ``seconds`` in dBFS. Opening and closing
devices block briefly, so they run in worker threads.

The terminal: an empty line (Enter) skips the key asked for, ``q`` skips
every remaining key. Its lines come from :func:`terminal_lines`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TextIO

import numpy as np
from PIL import Image

from appliance.cadence import STATUS_FAST
from appliance.hardware.ports import (
    ButtonPressed,
    HookLifted,
    HookReplaced,
    KeyPressed,
    PanelIO,
)
from appliance.media.devices import FramePacer
from appliance.media.frames import FRAME_SAMPLES, AudioSink, AudioSource, Samples
from appliance.media.levels import FULL_SCALE, rms_dbfs
from appliance.media.tones import ToneGenerator
from appliance.selftest.plan import (
    AskInput,
    BlinkLed,
    CheckFinished,
    DrawTestScreen,
    Outcome,
    PlayTone,
    RecordInput,
    Result,
    SelfTest,
    StepFinished,
    StepStarted,
    prompt_for,
)
from appliance.ui.notices import (
    render_check_step,
    render_check_summary,
    render_test_pattern,
)

__all__ = ["CheckRunner", "CheckScreen", "format_summary", "terminal_lines"]

logger = logging.getLogger(__name__)

#: Frames written ahead of the schedule: 100 ms against a stalled loop (a
#: sink keeps at most 120 ms waiting for the device).
LEAD_FRAMES = 5
#: Start of a recording that is not measured.
SETTLE_FRAMES = 5


class CheckScreen(Protocol):
    """The OLED as the self-test uses it (``hardware.display.Display``)."""

    write_errors: int

    def show(self, image: Image.Image) -> None:
        """Show ``image`` soon."""
        ...

    async def flush(self) -> None:
        """Wait until the newest frame has been written."""
        ...


async def terminal_lines(fd: int) -> AsyncIterator[str]:
    """Lines typed on ``fd`` (a terminal or pipe), read on the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            chunk = b""
        queue.put_nowait(chunk)
        if not chunk:
            loop.remove_reader(fd)

    try:
        loop.add_reader(fd, readable)
    except (OSError, ValueError):  # a regular file or a closed descriptor
        return
    buffer = b""
    try:
        while True:
            chunk = await queue.get()
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace").strip()
    finally:
        loop.remove_reader(fd)


class CheckRunner:
    """Run a :class:`SelfTest` on real (or mock) hardware.

    Args:
        test: the sequence.
        io: the panel's inputs and LEDs; None when there is no panel.
        screen: the OLED; None when there is none.
        open_sink: opens an output by device id (``alsa:NAME``).
        open_source: opens an input by device id.
        out: where the prompts and the summary go (the terminal).
        commands: lines typed by the person (see the module docstring).
    """

    def __init__(
        self,
        test: SelfTest,
        *,
        io: PanelIO | None,
        screen: CheckScreen | None,
        open_sink: Callable[[str], AudioSink],
        open_source: Callable[[str], AudioSource],
        out: TextIO,
        commands: AsyncIterator[str] | None = None,
    ) -> None:
        self.test = test
        self._io = io
        self._screen = screen
        self._open_sink = open_sink
        self._open_source = open_source
        self._out = out
        self._commands = commands
        self._wake = asyncio.Event()

    async def run(self) -> CheckFinished:
        """Run every step; return the verdicts."""
        loop = asyncio.get_running_loop()
        listeners: list[asyncio.Task[None]] = []
        if self._io is not None:
            listeners.append(loop.create_task(self._listen_panel(self._io)))
        if self._commands is not None:
            listeners.append(loop.create_task(self._listen_terminal(self._commands)))
        try:
            self.test.start(loop.time())
            while True:
                events = self.test.events_received()
                for event in events:
                    if isinstance(event, CheckFinished):
                        await self._finish(event)
                        return event
                    await self._handle(event)
                if events:
                    continue  # a performed step may have started the next
                deadline = self.test.next_deadline()
                self._wake.clear()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self.test.tick(loop.time())
        finally:
            for task in listeners:
                task.cancel()
            for task in listeners:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- events of the core -------------------------------------------------

    async def _handle(self, event: StepStarted | StepFinished) -> None:
        if isinstance(event, StepFinished):
            self._print_result(event.result)
            return
        step = event.step
        prompt = prompt_for(step, self.test.key_timeout_s)
        line = f"[{event.index + 1}/{event.total}] {prompt.title}: {prompt.big}"
        if prompt.hint:
            line += f" ({prompt.hint})"
        if isinstance(step, AskInput):
            line += " -- Enter skips, q skips the rest"
        self._say(line)
        if isinstance(step, DrawTestScreen):
            self._show(render_test_pattern())
        else:
            image = render_check_step(
                prompt.title,
                prompt.big,
                prompt.hint,
                index=event.index,
                total=event.total,
            )
            self._show(image)
        if isinstance(step, AskInput):
            return  # ends by input, skip or timeout (the main loop)
        loop = asyncio.get_running_loop()
        level: float | None = None
        error: str | None = None
        try:
            if isinstance(step, PlayTone):
                await self._play(step)
            elif isinstance(step, RecordInput):
                level = await self._record(step)
            elif isinstance(step, BlinkLed):
                await self._blink(step)
            else:
                error = await self._hold_pattern(step)
        except Exception as exc:  # the verdict on this part, not a crash
            logger.debug("self-test step %s failed", step, exc_info=True)
            error = str(exc) or type(exc).__name__
        if level is not None:
            self.test.level_measured(level, loop.time())
        else:
            self.test.step_done(loop.time(), error=error)

    async def _play(self, step: PlayTone) -> None:
        sink = await asyncio.to_thread(self._open_sink, step.device)
        try:
            # RMS dBFS of a sine is its peak level minus 3.01 dB.
            amplitude = math.sqrt(2) * 10 ** (step.dbfs / 20)
            tone = ToneGenerator((step.hz,), amplitude=amplitude)
            pacer = FramePacer()
            frames = max(1, round(step.seconds / 0.02))
            for i in range(frames):
                if i >= LEAD_FRAMES:
                    await pacer.wait()
                await sink.write_frame(tone.next_frame(FRAME_SAMPLES))
        finally:
            await asyncio.to_thread(sink.close)

    async def _record(self, step: RecordInput) -> float:
        source = await asyncio.to_thread(self._open_source, step.device)
        try:
            for _ in range(SETTLE_FRAMES):
                await source.read_frame()
            frames: list[Samples] = []
            for _ in range(max(1, round(step.seconds / 0.02))):
                frames.append(await source.read_frame())
        finally:
            await asyncio.to_thread(source.close)
        level = rms_dbfs(np.concatenate(frames))
        peak = max(int(np.max(np.abs(f.astype(np.int32)))) for f in frames)
        logger.debug(
            "%s: %.1f dBFS RMS, peak %.1f dBFS",
            step.device,
            level,
            20 * math.log10(max(peak, 1) / FULL_SCALE),
        )
        return level

    async def _blink(self, step: BlinkLed) -> None:
        if self._io is None:
            raise RuntimeError("no front panel")
        if step.led == "ringer":
            self._io.set_ringer(STATUS_FAST)
        else:
            self._io.set_status_led("fast")
        try:
            await asyncio.sleep(step.seconds)
        finally:
            if step.led == "ringer":
                self._io.set_ringer(None)
            else:
                self._io.set_status_led("off")

    async def _hold_pattern(self, step: DrawTestScreen) -> str | None:
        if self._screen is None:
            return "no display"
        errors = self._screen.write_errors
        await self._screen.flush()
        await asyncio.sleep(step.seconds)
        if self._screen.write_errors > errors:
            return "the display did not take the frame (I2C error)"
        return None

    async def _finish(self, event: CheckFinished) -> None:
        results = event.results
        counts = {o: sum(r.outcome is o for r in results) for o in Outcome}
        failures = [r.part for r in results if r.outcome is Outcome.FAIL]
        self._show(
            render_check_summary(
                counts[Outcome.PASS],
                counts[Outcome.FAIL],
                counts[Outcome.SKIPPED],
                failures[0] if failures else "",
            ),
        )
        if self._screen is not None:
            await self._screen.flush()
        self._out.write(format_summary(results))
        self._out.flush()

    # --- inputs -------------------------------------------------------------

    async def _listen_panel(self, io: PanelIO) -> None:
        loop = asyncio.get_running_loop()
        async for event in io.events():
            if isinstance(event, KeyPressed):
                self.test.input_event("key", event.key, loop.time())
            elif isinstance(event, ButtonPressed):
                self.test.input_event("button", event.button, loop.time())
            elif isinstance(event, HookLifted | HookReplaced):
                self.test.input_event("hook", "hook", loop.time())
            else:
                continue
            self._wake.set()

    async def _listen_terminal(self, commands: AsyncIterator[str]) -> None:
        loop = asyncio.get_running_loop()
        async for line in commands:
            self.test.skip(loop.time(), rest=line.lower().startswith("q"))
            self._wake.set()

    # --- output -------------------------------------------------------------

    def _show(self, image: Image.Image) -> None:
        if self._screen is not None:
            self._screen.show(image)

    def _say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def _print_result(self, result: Result) -> None:
        self._say(f"  {result.outcome.value:<7} {result.part}: {result.detail}")


def format_summary(results: tuple[Result, ...]) -> str:
    """The verdicts as a table, and the overall line."""
    width = max((len(r.part) for r in results), default=4)
    lines = ["", "summary:"]
    lines += [f"  {r.outcome.value:<7} {r.part:<{width}}  {r.detail}" for r in results]
    failed = sum(r.outcome is Outcome.FAIL for r in results)
    lines.append(
        f"{failed} part{'s' if failed != 1 else ''} failed"
        if failed
        else "every part passed (or was skipped)"
    )
    return "\n".join(lines) + "\n"
