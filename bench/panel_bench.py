"""Front-panel latency benchmarks (issue 4, item 8), through mock pins.

* **key -> tone**: a keypad key is pressed (the mock column pin is driven low
  by the membrane model while the scan thread drives its row) until the first
  non-silent 20 ms frame of the local DTMF feedback is written to the audio
  sink. The sink is a small recording backend registered as ``bench:``, so
  the figure covers the whole path: scan thread, debouncer, asyncio queue,
  Panel, controller, ``device.audio.play_dtmf``, mixer, sink. The phone is
  idle (dialing), where the controller plays the feedback itself.
  Target: p50 under 20 ms.
* **invite -> ringer**: from the moment the local exchange hands the
  ``invite`` frame to its socket writer (the core's ``frames_to_send`` is
  wrapped to timestamp it) until the ringer LED pin goes high; also from the
  caller's ``Device.connect()`` call. Target: under 50 ms.

``key_to_controller`` splits the first figure: press until the debounced
event reaches the controller (scan interval + the pin map's ``debounce_ms``).

Run: ``python bench/panel_bench.py [--trials 30]``; prints JSON. ``run()`` is
what ``bench/run.py`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.hardware.alsa_pcm import AlsaSink
from appliance.hardware.display import Display, create_device
from appliance.hardware.gpio import FrontPanelIO
from appliance.hardware.mock import MockPanelHardware
from appliance.hardware.pinmap import DisplaySpec, load_pinmap
from appliance.media.devices import register_backend
from appliance.media.frames import Samples
from appliance.phone.device import Device
from appliance.tokens import Keyring, create_access_token
from appliance.ui.controller import PanelController
from appliance.ui.panel import Panel
from appliance.ui.view import PanelState
from appliance_dev.rig import RigUnavailableError, VirtualCards

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "AC" + "b" * 32
KEY = "SK" + "c" * 32
SECRET = "s" * 32
APP = "AP" + "d" * 32


class _Sink:
    """Records when each non-silent frame is written (monotonic seconds)."""

    loud: list[float] = []  # shared by every sink the mixer opens
    last_silent: float = 0.0

    async def write_frame(self, samples: Samples) -> None:
        if np.any(samples):
            _Sink.loud.append(time.monotonic())
        else:
            _Sink.last_silent = time.monotonic()

    def close(self) -> None:
        _Sink.last_silent = time.monotonic()


class _CardSink(_Sink):
    """Phone A's speaker on the virtual sound card, timing the tone's entry.

    Wraps a real :class:`AlsaSink` on the rig: ``entered`` holds when the
    first non-silent samples of each write reach the card's ring buffer (from
    the ALSA thread), so the figure covers the whole path to the device; what
    the card then adds (its pre-fill and PulseAudio) is in docs/audio.md.
    """

    entered: list[float] = []

    def __init__(self, pcm: str) -> None:
        sink = self

        class Timed(AlsaSink):
            def _write(self, pcm: Any, data: bytes) -> int | None:
                if data is not self._prefill and any(data):
                    sink.entered.append(time.monotonic())
                return super()._write(pcm, data)

        self._card = Timed(pcm)

    async def write_frame(self, samples: Samples) -> None:
        await super().write_frame(samples)
        await self._card.write_frame(samples)

    def close(self) -> None:
        super().close()
        self._card.close()


def _token(identity: str) -> str:
    return create_access_token(
        account_sid=ACCOUNT,
        api_key_sid=KEY,
        api_secret=SECRET,
        identity=identity,
        now=time.time(),
        outgoing_application_sid=APP,
    )


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {
        "trials": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ms[-1], 2),
    }


async def _wait(predicate: Any, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110  # pins have no event to await
            await asyncio.sleep(0.0005)


async def run(trials: int = 30) -> dict[str, Any]:
    """Run both benchmarks; return their p50/p95/max in ms."""
    try:
        cards: VirtualCards | None = VirtualCards(["A"]).start()
    except RigUnavailableError as exc:
        print(f"no virtual sound card ({exc}); timing at the mixer only")
        cards = None
    if cards is not None:
        cards.install()
        register_backend("bench", None, lambda _arg: _CardSink(cards.spk_pcm("A")))
    else:
        register_backend("bench", None, lambda _arg: _Sink())
    try:
        return await _run(trials)
    finally:
        if cards is not None:
            cards.stop()


async def _run(trials: int) -> dict[str, Any]:
    pinmap = load_pinmap(ROOT / "hw" / "pinmap-reference.toml")
    pinmap = replace(pinmap, timing=replace(pinmap.timing, scan_interval_ms=5))
    keyring = Keyring()
    keyring.add_api_key(ACCOUNT, KEY, SECRET)
    invites: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        server = ExchangeServer(ExchangeConfig(keyring=keyring, ring_timeout=30))
        await stack.enter_async_context(server)
        frames_to_send = server.core.frames_to_send

        def stamped() -> list[tuple[int, str]]:
            frames: list[tuple[int, str]] = frames_to_send()
            if any('"type":"invite"' in text for _sid, text in frames):
                invites.append(time.monotonic())
            return frames

        server.core.frames_to_send = stamped  # type: ignore[method-assign]

        phone = Device(
            signaling_url=server.url,
            local_addresses=["127.0.0.1"],
            input_device="null",
            output_device="bench:",
        )
        stack.push_async_callback(phone.destroy)
        caller = Device(
            signaling_url=server.url, local_addresses=["127.0.0.1"], input_device="null"
        )
        stack.push_async_callback(caller.destroy)
        hw = MockPanelHardware(pinmap)
        io = await stack.enter_async_context(
            FrontPanelIO(pinmap, pin_factory=hw.factory)
        )
        display = await stack.enter_async_context(
            Display(create_device(DisplaySpec(driver="dummy")))
        )
        token = _token("desk")
        controller = PanelController(
            phone, Panel(), io=io, display=display, token=lambda: token
        )
        handled: list[float] = []
        handle_event = controller.handle_event

        def stamped_event(event: Any) -> None:
            handled.append(time.monotonic())
            handle_event(event)

        # Instrumentation: when the debounced key reaches the controller.
        controller.handle_event = stamped_event  # type: ignore[method-assign]
        await stack.enter_async_context(controller)
        await hw.tap_button("ready")
        async with asyncio.timeout(10):
            await controller.wait_for_state(PanelState.IDLE)
        await caller.setup(_token("caller"))

        # --- key press -> first non-silent frame at the sink
        key_s: list[float] = []
        key_card_s: list[float] = []
        key_in_s: list[float] = []
        for i in range(trials):
            key = "123456789*0"[i % 11]
            before = len(_Sink.loud)
            t0 = time.monotonic()
            seen = len(handled)
            hw.press_key(key)
            await _wait(lambda before=before: len(_Sink.loud) > before)
            key_s.append(_Sink.loud[before] - t0)
            key_in_s.append(handled[seen] - t0)
            if _CardSink.entered:
                await _wait(lambda t0=t0: _CardSink.entered[-1] > t0)
                key_card_s.append(next(t for t in _CardSink.entered if t > t0) - t0)
            hw.release_key(key)
            # Let the feedback tone finish and the dial string empty again.
            await _wait(lambda: _Sink.last_silent > _Sink.loud[-1])
            await hw.tap_button("hangup")
            async with asyncio.timeout(5):
                await controller.wait_for_state(PanelState.IDLE)

        # --- invite -> ringer LED on
        ringer = hw.pin("ringer")
        from_invite: list[float] = []
        from_connect: list[float] = []
        for _ in range(trials):
            t0 = time.monotonic()
            conn = await caller.connect({"To": "client:desk"})
            await _wait(lambda: bool(ringer.state))
            on_at = time.monotonic()
            from_connect.append(on_at - t0)
            from_invite.append(on_at - invites[-1])
            await conn.disconnect()
            async with asyncio.timeout(5):
                await controller.wait_for_state(PanelState.IDLE)
            await asyncio.sleep(0.05)

    return {
        **({"key_to_card": _stats(key_card_s)} if key_card_s else {}),
        "key_to_tone": _stats(key_s),
        "key_to_controller": _stats(key_in_s),
        "invite_to_ringer": _stats(from_invite),
        "connect_to_ringer": _stats(from_connect),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(args.trials))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
