"""``appliance demo``: a real call between two simulated phones.

Starts a local exchange in its own process with fresh credentials, registers two
phones (alice and bob) in this process, and plays a scripted call: alice dials
bob, bob's phone rings and he answers, both talk (speech from espeak-ng when it
is installed, else two tones), alice keys DTMF, bob hangs up. It prints a
timestamped timeline of both phones and writes what each phone heard as WAV
files. The exit status is non-zero if any step fails, so CI can run it.

When PulseAudio and the ALSA pulse plugin are installed (``make`` installs
them), the phones use real ``alsa:`` devices on clocked virtual sound cards
(:mod:`appliance_dev.rig`): the speech is played into each phone's microphone and
each phone's speaker is recorded, and each recording must contain the other
side's speech. Without them the demo falls back to ``file:`` devices and says
so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.app import build_device
from appliance.errors import ApplianceError, TwilioError
from appliance.log import configure_logging
from appliance.media.levels import rms_dbfs
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.options import parse_options
from appliance.system.heap import freeze_startup_heap
from appliance.tokens import create_access_token
from appliance_dev.analysis import (
    align,
    read_wav,
    resample,
    windowed_correlation,
    write_wav,
)
from appliance_dev.exchange_process import start_exchange_process, stop_process
from appliance_dev.rig import RigProcess, RigUnavailableError, VirtualCards
from appliance_dev.unit_file import run_as_unit

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

SPEECH = {
    "alice": "Hello Bob, this is Alice calling from the desk phone on the third "
    "floor. Can you hear me clearly? I will send you some digits now.",
    "bob": "Hi Alice, Bob here. I hear you loud and clear. The digits arrived. "
    "Thanks for calling, goodbye.",
}
TONES = {"alice": "tone:440", "bob": "tone:660"}
STEP_TIMEOUT_S = 15.0
#: Each recording must contain the far side's speech at least this well
#: (windowed normalized correlation; Opus on the rig measures about 0.97).
MIN_HEARD_CORRELATION = 0.5


class Timeline:
    """Collects timestamped events of both phones and prints them as they come."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str, str]] = []

    def add(self, who: str, what: str) -> None:
        t = time.monotonic() - self.t0
        self.rows.append((t, who, what))
        print(f"  +{t:7.3f}s  {who:<6} {what}", flush=True)


def _speech_input(who: str, out: Path) -> str:
    """Synthesize ``who``'s line with espeak-ng, or fall back to a tone."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return TONES[who]
    path = out / f"{who}-says.wav"
    voice = "en-us" if who == "alice" else "en-gb"
    try:
        subprocess.run(
            [espeak, "-v", voice, "-s", "160", "-w", str(path), SPEECH[who]],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("espeak-ng failed (%s); using a tone", exc)
        return TONES[who]
    return f"file:{path}"


class _Cards:
    """The demo's virtual sound cards: speech into the mics, speakers recorded."""

    def __init__(self, rig: VirtualCards, out: Path) -> None:
        self.rig = rig
        self.out = out
        self.said: dict[str, Path] = {}
        self.feeders: list[RigProcess] = []
        self.recorders: list[RigProcess] = []

    @classmethod
    def start(cls, out: Path) -> _Cards | None:
        """Start the rig, or say why not and return None (file: fallback)."""
        try:
            rig = VirtualCards(["alice", "bob"]).start()
        except RigUnavailableError as exc:
            print(f"Virtual sound cards unavailable ({exc}); using file: devices.")
            return None
        rig.install()
        print("Virtual sound cards up: alsa:alice_mic/_spk, alsa:bob_mic/_spk.")
        return cls(rig, out)

    def devices(self, who: str) -> dict[str, str]:
        """The Device options of ``who``; also prepares its speech."""
        self.said[who] = self._material(who)
        return {
            "input_device": f"alsa:{self.rig.mic_pcm(who)}",
            "output_device": f"alsa:{self.rig.spk_pcm(who)}",
        }

    def _material(self, who: str) -> Path:
        spoken = _speech_input(who, self.out)
        if spoken.startswith("file:"):
            return Path(spoken.partition(":")[2])
        path = self.out / f"{who}-says.wav"  # espeak-ng missing: a tone
        hz = float(spoken.partition(":")[2])
        t = np.arange(6 * 48_000) / 48_000
        write_wav(path, np.rint(8000 * np.sin(2 * np.pi * hz * t)))
        return path

    def record(self) -> None:
        """Start recording both speakers (before the phones open them)."""
        for who in ("alice", "bob"):
            path = self.out / f"{who}-heard.wav"
            self.recorders.append(self.rig.record(who, path))

    def talk(self) -> None:
        """Play both phones' speech into their microphones, at the same time."""
        self.feeders = [self.rig.feed(who, path) for who, path in self.said.items()]

    async def wait_talk(self) -> None:
        """Wait until both have finished speaking; a failed feeder fails."""
        for feeder in self.feeders:
            code = await asyncio.to_thread(feeder.wait, 4 * STEP_TIMEOUT_S)
            if code != 0:
                raise ApplianceError(f"playing {feeder.path} failed ({code})")

    def stop_recording(self) -> None:
        """Finish the recordings (WAV headers are written on stop)."""
        for recorder in self.recorders:
            recorder.stop()
        self.recorders.clear()

    def heard_far_side(self, who: str, far: str) -> float:
        """How well ``who``'s speaker recording matches ``far``'s speech."""
        said, rate, _channels = read_wav(self.said[far])
        reference = resample(said, rate, 48_000)
        heard = read_wav(self.out / f"{who}-heard.wav")[0].astype(np.float64)
        found = align(reference, heard)
        return windowed_correlation(reference, heard, found.lag)

    def stop(self) -> None:
        """Stop feeders, recorders and the daemon."""
        for feeder in self.feeders:
            feeder.stop()
        self.stop_recording()
        self.rig.stop()


def _watch(device: Device, who: str, timeline: Timeline) -> None:
    def say(what: str) -> Callable[..., None]:
        return lambda *_: timeline.add(who, what)

    device.on("ready", say("ready (registered)"))
    device.on("offline", say("offline"))
    device.on(
        "connect", lambda c: timeline.add(who, f"connected {c.call_sid} ({c.codec})")
    )
    device.on("disconnect", say("disconnected"))
    device.on("cancel", say("call cancelled"))
    device.on("error", lambda e: timeline.add(who, f"error {e.code}: {e.message}"))


def _heard(path: Path) -> tuple[float, float]:
    """Duration (s) and level (dBFS) of a recording."""
    with wave.open(str(path), "rb") as wav:
        frames = wav.getnframes()
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(frames), dtype=np.int16)
    return frames / rate, rms_dbfs(samples)


async def _wait(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), STEP_TIMEOUT_S)
    except TimeoutError:
        raise ApplianceError(f"timed out waiting for {what}") from None


async def run_demo(out: Path) -> int:
    """Run the scripted call; return 0 on success."""
    account = "AC" + secrets.token_hex(16)
    key = "SK" + secrets.token_hex(16)
    secret = secrets.token_urlsafe(24)
    app = "AP" + secrets.token_hex(16)
    timeline = Timeline()
    print("Starting the local exchange and two phones (alice, bob)...", flush=True)
    proc, url = await start_exchange_process(account, key, secret)
    timeline.add("exch", f"listening on {url}")
    devices: dict[str, Device] = {}
    cards = _Cards.start(out)
    try:
        if cards is not None:
            cards.record()
            await asyncio.sleep(0.3)  # recorders before the phones (rig.py)
        for who in ("alice", "bob"):
            io: dict[str, str] = (
                cards.devices(who)
                if cards is not None
                else {
                    "input_device": _speech_input(who, out),
                    "output_device": f"file:{out / f'{who}-heard.wav'}",
                }
            )
            device = build_device(
                parse_options(
                    {
                        "signaling_url": url,
                        "local_addresses": ["127.0.0.1"],
                        "enable_ringing_state": True,
                        **io,
                    }
                )
            )
            _watch(device, who, timeline)
            devices[who] = device
            token = create_access_token(
                account_sid=account,
                api_key_sid=key,
                api_secret=secret,
                identity=who,
                now=time.time(),
                outgoing_application_sid=app,
            )
            await device.setup(token)
        freeze_startup_heap()  # as the service does once it is up
        return await _script(devices, timeline, out, cards)
    except (ApplianceError, TwilioError) as exc:
        timeline.add("demo", f"FAILED: {exc}")
        return 1
    finally:
        for device in devices.values():
            await device.destroy()
        if cards is not None:
            cards.stop()
        await stop_process(proc)


async def _script(
    devices: dict[str, Device], timeline: Timeline, out: Path, cards: _Cards | None
) -> int:
    alice, bob = devices["alice"], devices["bob"]
    incoming: asyncio.Queue[Connection] = asyncio.Queue()
    bob.on("incoming", incoming.put_nowait)
    digits: list[str] = []
    all_digits = asyncio.Event()
    bob_hung_up = asyncio.Event()

    timeline.add("alice", "dials bob")
    call = await alice.connect({"To": "client:bob", "Floor": "3"})
    ringing = asyncio.Event()

    def on_ringing(_early: bool) -> None:
        timeline.add("alice", "hears ringback")
        ringing.set()

    call.on("ringing", on_ringing)
    answered = asyncio.Event()
    call.on("accept", lambda _c: answered.set())
    call.on("disconnect", lambda _c: bob_hung_up.set())

    bob_call = await asyncio.wait_for(incoming.get(), STEP_TIMEOUT_S)
    timeline.add(
        "bob",
        f"phone rings: call from {bob_call.parameters.get('From')} "
        f"(Floor={bob_call.custom_parameters.get('Floor')})",
    )

    def on_digit(d: str) -> None:
        digits.append(d)
        timeline.add("bob", f"received DTMF {d}")
        if len(digits) == 4:
            all_digits.set()

    bob_call.on("dtmf", on_digit)
    await _wait(ringing, "ringback")
    await asyncio.sleep(1.0)  # let it ring once
    timeline.add("bob", "answers")
    await bob_call.accept()
    await _wait(answered, "the answer")
    if cards is not None:
        timeline.add("demo", "alice and bob talk into their virtual microphones")
        cards.talk()
    await asyncio.sleep(4.0)  # talk
    timeline.add("alice", "keys 1 2 3 #")
    call.send_digits("123#")
    await _wait(all_digits, "the digits")
    await asyncio.sleep(3.0)  # talk some more
    if cards is not None:
        await cards.wait_talk()
        await asyncio.sleep(1.0)  # the last words through codec and buffers
    timeline.add("bob", "hangs up")
    await bob_call.disconnect()
    await _wait(bob_hung_up, "alice's side to hang up")
    await asyncio.sleep(0.3)
    if cards is not None:
        cards.stop_recording()
    ok = digits == list("123#")
    print("\nWhat each phone heard:", flush=True)
    for who in ("alice", "bob"):
        path = out / f"{who}-heard.wav"
        seconds, level = _heard(path)
        audible = seconds > 5.0 and level > -50.0
        ok = ok and audible
        print(
            f"  {path}: {seconds:.1f} s, level {level:.1f} dBFS"
            f"{'' if audible else '  (SILENT: FAILED)'}",
            flush=True,
        )
        if cards is not None:
            far = "bob" if who == "alice" else "alice"
            score = cards.heard_far_side(who, far)
            clear = score > MIN_HEARD_CORRELATION
            ok = ok and clear
            print(
                f"    {far}'s voice in it: correlation {score:.2f}"
                f"{'' if clear else '  (NOT HEARD: FAILED)'}",
                flush=True,
            )
    print(
        f"\nDTMF received by bob: {''.join(digits)} ({'ok' if ok else 'WRONG'})",
        flush=True,
    )
    return 0 if ok else 1


def main(out: str) -> int:
    """Entry point of ``appliance demo``."""
    configure_logging(os.environ.get("APPLIANCE_LOG_LEVEL", "WARNING"))
    run_as_unit()  # the phones run as systemd runs one (unit_file.py)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_demo(path))
