"""AudioHelper: ``device.audio``, the seed's Device.audio in snake_case.

What it owns, per Device:

* **Outputs.** One :class:`~appliance.audio.mixer.OutputMixer` per output
  device id in use, shared by every role: ``speaker_devices`` (call audio,
  ``outgoing``/``disconnect``/DTMF sounds) and ``ringtone_devices``
  (``incoming``). ``default`` means the Device's ``output_device`` option.
* **The input.** One open input device (the selected one, else the Device's
  ``input_device`` while a call needs it), read by one task that meters it
  (``input_volume`` events) and hands frames to the call. Switching the input
  during a call swaps the device under the call without touching the media.
* **Sounds.** Generated defaults (:mod:`appliance.audio.sounds`), custom ones
  from the ``sounds`` option (:mod:`appliance.audio.loader`), the three flags.
* **Hot-plug.** While the Device is set up, the ALSA device list is polled
  about every second (in a worker thread; ALSA has no change notification).
  Any change emits ``device_change(lost_active_devices)``. A lost active
  device is replaced by ``default``; calls continue (anchors.md §5: baresip
  #2433 and pjsip#3132 crashed or went silent on unplug).

Events (``device.audio.on(name, handler)``): ``device_change(lost)`` with a
list of :class:`AudioDeviceInfo` (active speaker, ringtone or input devices
that disappeared), and ``input_volume(volume)`` (0..1 from -100..-30 dBFS, at
most 60 per second; frames that arrive in a burst under load are coalesced).

Virtual devices: ``null`` is listed for input and output; ``tone:HZ`` and
``file:PATH.wav`` cannot be enumerated but can be selected; ``alsa:NAME``
must be in the current ALSA listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from appliance.audio.collection import AudioDeviceInfo, AudioOutputCollection, Role
from appliance.audio.loader import SoundLoader, SoundLoadError
from appliance.audio.mixer import FanOutSink, OutputMixer, Playback, SoundInput
from appliance.audio.sounds import (
    MAX_DURATION_S,
    Sound,
    default_sound,
    digit_sound_name,
)
from appliance.cadence import tones_for
from appliance.errors import AudioDeviceError, InvalidArgumentError
from appliance.media.audio import AudioSink, AudioSource, Samples
from appliance.media.devices import open_sink, open_source, parse_device_id
from appliance.media.levels import level_from_dbfs, rms_dbfs
from appliance.phone.events import Emitter, Handler
from appliance.tasks import wait_event

if TYPE_CHECKING:
    from appliance.hardware.audio_alsa import AlsaDeviceInfo, DeviceSetTracker
    from appliance.phone.options import DeviceOptions

__all__ = [
    "AUDIO_EVENTS",
    "CONSTRAINT_KEYS",
    "INPUT_VOLUME_MAX_RATE",
    "RING_START_TIMEOUT_S",
    "AudioHelper",
    "AudioHost",
]

logger = logging.getLogger(__name__)

AUDIO_EVENTS = frozenset({"device_change", "input_volume"})
#: The seed: input_volume "up to 60 times per second".
INPUT_VOLUME_MAX_RATE = 60.0
#: signaling-protocol.md §7 (``RINGTONE_PLAY_TIMEOUT``): ``incoming`` is emitted
#: once the ring plays, or after this long at the latest.
RING_START_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 1.0
#: Frames a call's input tap keeps for a late reader (drop oldest).
TAP_FRAMES = 5
#: MediaTrackConstraints we accept (snake_case) and the type of their value.
CONSTRAINT_KEYS: dict[str, tuple[type, ...]] = {
    "echo_cancellation": (bool,),
    "noise_suppression": (bool,),
    "auto_gain_control": (bool,),
    "channel_count": (int,),
    "sample_rate": (int,),
    "sample_size": (int,),
    "latency": (int, float),
    "device_id": (str,),
}

Lister = Callable[[], "list[AlsaDeviceInfo]"]


class AudioHost(Protocol):
    """What the helper needs from its Device."""

    @property
    def options(self) -> DeviceOptions:
        """The Device's options (input_device, output_device, sounds...)."""
        ...

    def _emit(self, event: str, *args: Any) -> None: ...


def _default_lister() -> list[AlsaDeviceInfo]:
    from appliance.hardware.audio_alsa import list_pcm_devices

    return list_pcm_devices()


class _RecordingFinishedError(AudioDeviceError):
    """A ``file:`` output was closed already; reopening would truncate it."""


class _AppendingSink:
    """Reopens a finished ``file:`` recording, keeping what it holds."""

    def __init__(self, opener: Callable[[str], AudioSink], device_id: str) -> None:
        path = device_id.partition(":")[2]
        try:
            with wave.open(path, "rb") as reader:
                raw = reader.readframes(reader.getnframes())
            self._prefix: Samples | None = np.frombuffer(raw, dtype="<i2").astype(
                np.int16
            )
        except (OSError, EOFError, wave.Error):
            self._prefix = None
        self._sink = opener(device_id)

    async def write_frame(self, samples: Samples) -> None:
        prefix, self._prefix = self._prefix, None
        if prefix is not None and prefix.size:
            await self._sink.write_frame(prefix)
        await self._sink.write_frame(samples)

    def close(self) -> None:
        self._sink.close()


class _CallSource:
    """The call's AudioSource: frames from the helper's shared input."""

    def __init__(self, helper: AudioHelper) -> None:
        self._helper = helper
        self._frames: deque[Samples] = deque(maxlen=TAP_FRAMES)
        self._waiter: asyncio.Future[None] | None = None
        self.reading = False
        self.closed = False

    def push(self, frame: Samples) -> None:
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_frame(self) -> Samples:
        """The next frame of whichever input device is current."""
        if self.closed:
            raise AudioDeviceError(message="read from a closed call input")
        if not self.reading:
            # Start the device on the first read, not when the call is
            # created: a file: source then plays from its start in the call.
            self.reading = True
            self._helper._input_wanted()
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self.closed:
                raise AudioDeviceError(message="read from a closed call input")
        return self._frames.popleft()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._helper._tap_closed(self)


class AudioHelper:
    """``device.audio``: devices, sounds and their events (see module docstring).

    Args:
        host: the Device.
        lister: lists ALSA PCMs (default ``list_pcm_devices``; tests pass a fake).
        source_opener: opens input device ids (default ``open_source``).
        sink_opener: opens output device ids (default ``open_sink``).
        loader: fetches custom sounds (default: cache in ``default_cache_dir()``).
        poll_interval_s: device-list poll period while started.
    """

    def __init__(
        self,
        host: AudioHost,
        *,
        lister: Lister | None = None,
        source_opener: Callable[[str], AudioSource] = open_source,
        sink_opener: Callable[[str], AudioSink] = open_sink,
        loader: SoundLoader | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self._host = host
        self._lister: Lister = lister or _default_lister
        self._open_source = source_opener
        self._open_sink = sink_opener
        self._loader = loader or SoundLoader()
        self.poll_interval_s = poll_interval_s
        self._events = Emitter(AUDIO_EVENTS)
        self.speaker_devices = AudioOutputCollection(self, "speaker")
        self.ringtone_devices = AudioOutputCollection(self, "ringtone")
        self._flags = {"incoming": True, "outgoing": True, "disconnect": True}
        self._country = "US"
        self._constraints: dict[str, Any] | None = None
        self._mixers: dict[str, OutputMixer] = {}
        self._recordings: set[str] = set()  # file: outputs opened once already
        self._append_ok: set[str] = set()  # ...that a new call may reopen
        self._calls: list[FanOutSink] = []
        self._rings: dict[int, Playback] = {}
        self._role_playbacks: dict[Role, list[Playback]] = {
            "speaker": [],
            "ringtone": [],
        }
        self._opened_calls: set[int] = set()
        self._alsa: list[AlsaDeviceInfo] | None = None
        self._tracker: DeviceSetTracker | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._list_warned = False
        self._custom: dict[str, Sound] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._loaded_sounds: Mapping[str, str] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        # input
        self._input_selected: str | None = None
        self._input_source: AudioSource | None = None
        self._input_id: str | None = None
        self._input_task: asyncio.Task[None] | None = None
        self._taps: list[_CallSource] = []
        self._last_volume = -float("inf")
        #: Lost-device events handled so far (tests and diagnostics).
        self.device_changes = 0

    # ---- events ---------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on ``device_change`` or ``input_volume``."""
        return self._events.on(event, handler)

    def once(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on the next ``event`` only."""
        return self._events.once(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Remove a handler."""
        self._events.off(event, handler)

    # ---- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start polling devices and loading custom sounds (Device.setup)."""
        loop = asyncio.get_running_loop()
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = loop.create_task(self._poll_loop(), name="audio-poll")
        self._load_custom_sounds()

    async def close(self) -> None:
        """Stop polling, every sound, the input and every mixer (Device.destroy).

        The helper can be started again afterwards.
        """
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._tasks) + list(self._loading.values()):
            pending.cancel()
        await asyncio.gather(
            *self._tasks, *self._loading.values(), return_exceptions=True
        )
        self._loading.clear()
        for sink in list(self._calls):
            sink.close()
        for tap in list(self._taps):
            tap.close()
        await self._close_input()
        self._input_selected = None
        for mixer in list(self._mixers.values()):
            mixer.close()
        self._mixers.clear()
        self._rings.clear()
        self._opened_calls.clear()
        await self._events.drain()

    # ---- device lists -----------------------------------------------------------

    @property
    def available_input_devices(self) -> dict[str, AudioDeviceInfo]:
        """Input devices by id: ``default``, ``null`` and the ALSA capture PCMs."""
        opts = self._host.options
        found = {
            "default": AudioDeviceInfo(
                "default", f"Default ({opts.input_device})", "audioinput"
            ),
            "null": AudioDeviceInfo("null", "No input (silence)", "audioinput"),
        }
        for dev in self._alsa or []:
            if dev.direction == "input":
                found[dev.id] = AudioDeviceInfo(dev.id, dev.label, "audioinput")
        return found

    @property
    def available_output_devices(self) -> dict[str, AudioDeviceInfo]:
        """Output devices by id: ``default``, ``null`` and the ALSA playback PCMs."""
        opts = self._host.options
        found = {
            "default": AudioDeviceInfo(
                "default", f"Default ({opts.output_device})", "audiooutput"
            ),
            "null": AudioDeviceInfo("null", "No output (discard)", "audiooutput"),
        }
        for dev in self._alsa or []:
            if dev.direction == "output":
                found[dev.id] = AudioDeviceInfo(dev.id, dev.label, "audiooutput")
        return found

    def _output_info(self, device_id: str) -> AudioDeviceInfo:
        known = self.available_output_devices.get(device_id)
        return known or AudioDeviceInfo(device_id, device_id, "audiooutput")

    def _input_info(self, device_id: str) -> AudioDeviceInfo:
        known = self.available_input_devices.get(device_id)
        return known or AudioDeviceInfo(device_id, device_id, "audioinput")

    async def _refresh(self) -> None:
        """List the ALSA devices now if they were never listed."""
        if self._alsa is None:
            await self._poll_once()

    async def _check_ids(self, ids: tuple[str, ...], kind: str) -> None:
        await self._refresh()
        available = (
            self.available_input_devices
            if kind == "input"
            else self.available_output_devices
        )
        for device_id in ids:
            if device_id in available:
                continue
            parsed = parse_device_id(device_id)  # raises AudioDeviceError 31402
            # tone: and file: ids are virtual and cannot be listed; ALSA ids
            # must be in the listing (a stale id is "not found", as in the seed).
            virtual = ("tone", "file") if kind == "input" else ("file",)
            if parsed.kind not in virtual:
                raise AudioDeviceError(
                    message=f"{kind} device {device_id!r} not found (available: "
                    f"{', '.join(sorted(available))})"
                )

    async def _check_output_ids(self, ids: tuple[str, ...]) -> None:
        await self._check_ids(ids, "output")

    def _resolve_output(self, device_id: str) -> str:
        return self._host.options.output_device if device_id == "default" else device_id

    def _resolve_input(self, device_id: str) -> str:
        return self._host.options.input_device if device_id == "default" else device_id

    # ---- input --------------------------------------------------------------------

    @property
    def input_device(self) -> AudioDeviceInfo | None:
        """The device chosen with :meth:`set_input_device`, or None."""
        if self._input_selected is None:
            return None
        return self._input_info(self._input_selected)

    async def set_input_device(self, device_id: str) -> None:
        """Use ``device_id`` as the microphone, now and for later calls.

        The device is opened at once (so failures show here) and metered:
        ``input_volume`` events flow until :meth:`unset_input_device`.

        Raises:
            InvalidArgumentError: not a non-empty string.
            AudioDeviceError: (31402) unknown device, or it cannot be opened.
        """
        if not isinstance(device_id, str) or not device_id:
            raise InvalidArgumentError("device_id", "must be a non-empty string")
        await self._check_ids((device_id,), "input")
        await self._switch_input(self._resolve_input(device_id))
        self._input_selected = device_id
        self._start_input_task()

    async def unset_input_device(self) -> None:
        """Forget the selected input; stops metering. A call goes back to default."""
        self._input_selected = None
        if self._taps:
            await self._switch_input(self._host.options.input_device)
            if not any(tap.reading for tap in self._taps):
                await self._stop_input_task()
        else:
            await self._close_input()

    async def _switch_input(self, device_id: str) -> None:
        """Open ``device_id`` and make it the input (the old one is closed).

        Raises:
            AudioDeviceError: cannot open; the old input stays.
        """
        if device_id == self._input_id and self._input_source is not None:
            return
        source = self._open_source(device_id)
        running = self._input_task is not None
        await self._stop_input_task()
        old, self._input_source, self._input_id = self._input_source, source, device_id
        if old is not None:
            old.close()
        logger.info("audio input: %s", device_id)
        if running:
            self._start_input_task()

    def _input_wanted(self) -> None:
        """A call started reading: make sure the input runs."""
        if self._input_source is None:
            self._open_input_with_fallback(self._current_input_target())
        self._start_input_task()

    def _current_input_target(self) -> str:
        if self._input_selected is not None:
            return self._resolve_input(self._input_selected)
        return self._host.options.input_device

    def _open_input_with_fallback(self, device_id: str) -> None:
        for candidate in dict.fromkeys((device_id, self._host.options.input_device)):
            try:
                self._input_source = self._open_source(candidate)
                self._input_id = candidate
                return
            except AudioDeviceError as exc:
                logger.warning("cannot open input %s: %s", candidate, exc.message)
        # Last resort: silence, so the call still runs (the far end hears nothing).
        self._input_source = self._open_source("null")
        self._input_id = "null"

    def _start_input_task(self) -> None:
        if self._input_source is None:
            return
        if self._input_task is None or self._input_task.done():
            self._input_task = asyncio.get_running_loop().create_task(
                self._read_input(self._input_source), name="audio-input"
            )

    async def _stop_input_task(self) -> None:
        task, self._input_task = self._input_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_input(self) -> None:
        await self._stop_input_task()
        source, self._input_source, self._input_id = self._input_source, None, None
        if source is not None:
            source.close()

    async def _read_input(self, source: AudioSource) -> None:
        min_interval = 1.0 / INPUT_VOLUME_MAX_RATE
        while True:
            try:
                frame = await source.read_frame()
            except AudioDeviceError as exc:
                logger.warning("audio input %s failed: %s", self._input_id, exc)
                self._input_task = None
                await self._input_lost()
                return
            if getattr(source, "failed", False):
                # An ALSA source that lost its device reads paced silence
                # rather than raising (the call keeps its clock); switch now,
                # not when the card leaves the listing (it may never).
                logger.warning("audio input %s lost", self._input_id)
                self._input_task = None
                await self._input_lost()
                return
            for tap in list(self._taps):
                tap.push(frame)
            now = time.monotonic()
            # At most 60 events per second; when the loop is late, frames
            # queued in the device arrive back to back and only the last of
            # a burst is reported (the seed: "scale down on slower devices").
            if now - self._last_volume >= min_interval * 0.95:
                self._last_volume = now
                self._events.emit("input_volume", level_from_dbfs(rms_dbfs(frame)))

    async def _input_lost(self) -> None:
        """The input failed: fall back to the default device, else silence."""
        lost = self._input_id
        source, self._input_source, self._input_id = self._input_source, None, None
        if source is not None:
            source.close()
        if self._input_selected is not None:
            self._input_selected = "default"
        if self._taps or self._input_selected is not None:
            target = self._host.options.input_device
            self._open_input_with_fallback("null" if target == lost else target)
            self._start_input_task()

    def _tap_closed(self, tap: _CallSource) -> None:
        if tap in self._taps:
            self._taps.remove(tap)
        if not self._taps and self._input_selected is None:
            task = asyncio.get_running_loop().create_task(self._close_input())
            self._keep(task)

    # ---- audio constraints --------------------------------------------------------

    @property
    def audio_constraints(self) -> dict[str, Any] | None:
        """The constraints set by :meth:`set_audio_constraints`; starts as None."""
        return None if self._constraints is None else dict(self._constraints)

    @property
    def audio_constraints_applied(self) -> bool:
        """False: echo cancellation, noise suppression and AGC are not built yet."""
        return False

    async def set_audio_constraints(self, constraints: Mapping[str, Any]) -> None:
        """Store constraints for the input (validated; not applied yet).

        ``device_id`` is ignored, as in the seed: select the device with
        :meth:`set_input_device`.

        Raises:
            InvalidArgumentError: not a mapping, an unknown key or a bad value.
        """
        if not isinstance(constraints, Mapping):
            raise InvalidArgumentError("audio_constraints", "must be a mapping")
        checked: dict[str, Any] = {}
        for key, value in constraints.items():
            types = CONSTRAINT_KEYS.get(key)
            if types is None:
                raise InvalidArgumentError(
                    f"audio_constraints.{key}",
                    f"unknown constraint (known: {', '.join(sorted(CONSTRAINT_KEYS))})",
                )
            if (isinstance(value, bool) and bool not in types) or not isinstance(
                value, types
            ):
                raise InvalidArgumentError(
                    f"audio_constraints.{key}", f"invalid value {value!r}"
                )
            if key != "device_id":
                checked[key] = value
        self._constraints = checked
        logger.warning(
            "audio constraints %s stored but not applied: input processing "
            "(AEC/NS/AGC) is not available yet",
            checked,
        )

    async def unset_audio_constraints(self) -> None:
        """Forget the constraints (back to None)."""
        self._constraints = None

    # ---- sound flags and country ----------------------------------------------------

    def incoming(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether the ``incoming`` ring plays."""
        return self._flag("incoming", enabled)

    def outgoing(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether ``outgoing`` plays when a call is answered."""
        return self._flag("outgoing", enabled)

    def disconnect(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether ``disconnect`` plays when a call ends."""
        return self._flag("disconnect", enabled)

    def _flag(self, name: str, enabled: bool | None) -> bool:
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise InvalidArgumentError(name, "must be true or false")
            self._flags[name] = enabled
        return self._flags[name]

    @property
    def country(self) -> str:
        """Country of the generated ring (appliance.cadence; default US)."""
        return self._country

    @country.setter
    def country(self, value: str) -> None:
        self._country = tones_for(value).country  # validates

    # ---- sounds -------------------------------------------------------------------

    def _load_custom_sounds(self) -> None:
        sounds = self._host.options.sounds or {}
        if sounds == self._loaded_sounds:
            return
        previous = self._loaded_sounds or {}
        self._loaded_sounds = sounds
        # Keep a sound only while its location is the same: setup() with a
        # new file for "incoming" must ring with the new file.
        self._custom = {
            n: s for n, s in self._custom.items() if sounds.get(n) == previous.get(n)
        }
        for name in [n for n in self._loading if sounds.get(n) != previous.get(n)]:
            stale = self._loading.pop(name)
            stale.cancel()
            self._keep(stale)  # still owned until it has ended
        for name, location in sounds.items():
            if name not in self._custom and name not in self._loading:
                task = asyncio.get_running_loop().create_task(
                    self._load_one(name, location), name=f"sound-{name}"
                )
                self._loading[name] = task

    async def _load_one(self, name: str, location: str) -> None:
        try:
            self._custom[name] = await self._loader.load(name, location)
            logger.info("custom sound %s loaded from %s", name, location)
        except SoundLoadError as exc:
            logger.error("%s", exc.message)
            self._host._emit("error", exc)
        finally:
            if self._loading.get(name) is asyncio.current_task():
                del self._loading[name]

    async def sound(self, name: str) -> Sound:
        """The sound to play for ``name``: custom if loaded, else the default.

        Waits for a custom sound still being fetched (bounded by the loader's
        timeout).

        Raises:
            KeyError: unknown name.
        """
        if name not in MAX_DURATION_S:
            raise KeyError(f"unknown sound {name!r}")
        pending = self._loading.get(name)
        if pending is not None:
            await asyncio.wait({pending})
        custom = self._custom.get(name)
        if custom is not None:
            return custom
        return default_sound(
            name,
            country=self._country,
            fake_dtmf=self._host.options.fake_local_dtmf,
        )

    def _mixer(self, device_id: str) -> OutputMixer:
        mixer = self._mixers.get(device_id)
        if mixer is None or mixer.closed:
            mixer = OutputMixer(
                device_id, opener=self._open_output, on_failed=self._output_failed
            )
            self._mixers[device_id] = mixer
        return mixer

    def _open_output(self, device_id: str) -> AudioSink:
        """Open an output for a mixer; a ``file:`` recording only once.

        A mixer closes its sink when nothing plays, and reopening a ``file:``
        sink truncates the recording: so a recording covers one stretch of
        activity (a call, with its ring and sounds) and is complete when the
        call's media closes. Sounds after that are not recorded; the next
        call appends to it (the file is rewritten with the old audio first).

        Raises:
            AudioDeviceError: cannot open, or a finished recording.
        """
        if device_id.startswith("file:"):
            if device_id in self._recordings:
                if device_id not in self._append_ok:
                    raise _RecordingFinishedError(
                        message=f"{device_id}: recording already finished"
                    )
                self._append_ok.discard(device_id)
                return _AppendingSink(self._open_sink, device_id)
            sink = self._open_sink(device_id)
            self._recordings.add(device_id)
            return sink
        return self._open_sink(device_id)

    def _role_devices(self, role: Role) -> list[str]:
        collection = (
            self.speaker_devices if role == "speaker" else self.ringtone_devices
        )
        return list(dict.fromkeys(self._resolve_output(i) for i in collection.ids))

    def _role_gain(self, role: Role) -> float:
        collection = (
            self.speaker_devices if role == "speaker" else self.ringtone_devices
        )
        return collection.volume

    def play(self, sound: Sound, role: Role = "speaker") -> Playback:
        """Play ``sound`` on the devices of ``role`` (speaker or ringtone).

        Devices that cannot be opened are recorded in ``Playback.errors``.
        """
        playback = Playback(sound)
        gain = self._role_gain(role)
        for device_id in self._role_devices(role):
            self._start_on(playback, device_id, gain)
        playback._seal()
        self._track(role, playback)
        return playback

    def _start_on(self, playback: Playback, device_id: str, gain: float) -> None:
        item = SoundInput(playback, gain)
        try:
            self._mixer(device_id).add(item)
        except _RecordingFinishedError as exc:
            logger.debug("%s not played: %s", playback.sound.name, exc.message)
            item.detached(None)
        except AudioDeviceError as exc:
            logger.warning(
                "cannot play %s on %s: %s", playback.sound.name, device_id, exc
            )
            item.detached(exc)

    def _track(self, role: Role, playback: Playback) -> None:
        active = self._role_playbacks[role]
        active[:] = [p for p in active if p.playing]
        if playback.playing:
            active.append(playback)

    def play_dtmf(self, digit: str) -> Playback | None:
        """Local key feedback for ``digit`` on the speaker devices (front panel).

        Uses the custom ``dtmfN`` sound if one is loaded, else the fake pair
        with ``fake_local_dtmf`` or the Q.23 pair.

        Raises:
            InvalidArgumentError: not 0-9, * or #.
        """
        try:
            name = digit_sound_name(digit)
        except KeyError:
            raise InvalidArgumentError(
                "digit", f"not a keypad digit: {digit!r}"
            ) from None
        custom = self._custom.get(name)
        sound = custom or default_sound(
            name, country=self._country, fake_dtmf=self._host.options.fake_local_dtmf
        )
        return self.play(sound, "speaker")

    async def play_named(self, name: str, role: Role = "speaker") -> Playback:
        """Play the seed's sound ``name`` (custom or default) on ``role``."""
        return self.play(await self.sound(name), role)

    async def _test_outputs(
        self, collection: AudioOutputCollection, location: str | None
    ) -> None:
        if not collection.ids:
            raise AudioDeviceError(message="no active devices to test")
        if location is None:
            sound = await self.sound("outgoing")
        else:
            loaded = await self._loader.load("outgoing", location)
            # A test sound plays whole (the seed's 3 s cut is for `outgoing`).
            sound = Sound("test", loaded.samples, custom=True)
        playback = self.play(sound, collection.role)
        await playback.wait()
        if playback.errors:
            raise AudioDeviceError(
                message="test sound failed on: "
                + "; ".join(e.message for e in playback.errors)
            )

    # ---- output changes and failures -------------------------------------------------

    def _outputs_changed(self, role: Role) -> None:
        """Move what plays for ``role`` to its current devices and volume."""
        wanted = self._role_devices(role)
        gain = self._role_gain(role)
        if role == "speaker":
            for sink in list(self._calls):
                self._retarget_call(sink, wanted, gain)
        for playback in list(self._role_playbacks[role]):
            if not playback.playing:
                continue
            for item in list(playback._inputs):
                item.gain = gain
            playing_on = {
                m.device_id
                for m in self._mixers.values()
                for i in m.inputs
                if isinstance(i, SoundInput) and i.playback is playback
            }
            # Move looping or long sounds: stop on devices no longer wanted
            # and start (from the beginning) on the new ones.
            for mixer in list(self._mixers.values()):
                if mixer.device_id not in wanted:
                    for i in mixer.inputs:
                        if isinstance(i, SoundInput) and i.playback is playback:
                            i.cursor.stop()
            playback._sealed = False
            for device_id in wanted:
                if device_id not in playing_on:
                    self._start_on(playback, device_id, gain)
            playback._seal()

    def _retarget_call(self, sink: FanOutSink, wanted: list[str], gain: float) -> None:
        for device_id in list(sink.streams):
            if device_id not in wanted:
                sink.detach(device_id)
        for device_id in wanted:
            # A new call may continue a finished recording; a lone sound may
            # not (_open_output).
            self._append_ok.add(device_id)
            try:
                sink.attach(self._mixer(device_id))
            except AudioDeviceError as exc:
                logger.warning("call audio cannot use %s: %s", device_id, exc.message)
        sink.set_gain(gain)

    def _output_failed(self, device_id: str, error: AudioDeviceError) -> None:
        """A mixer's sink reported its device gone: treat it as unplugged."""
        # Forget the failed mixer first, so that what moves back onto the
        # same id (the default device is the fallback for itself) gets a
        # fresh one that reopens the device.
        mixer = self._mixers.get(device_id)
        if mixer is not None and mixer.closed:
            del self._mixers[device_id]
        self._lose_devices({device_id}, source="output failure")

    def _lose_devices(self, removed: set[str], *, source: str) -> list[AudioDeviceInfo]:
        """Drop ``removed`` ids from the active sets; fall back to default."""
        lost: list[AudioDeviceInfo] = []
        for collection in (self.speaker_devices, self.ringtone_devices):
            keep = []
            for device_id in collection.ids:
                if self._resolve_output(device_id) in removed:
                    lost.append(self._output_info(device_id))
                else:
                    keep.append(device_id)
            if len(keep) != len(collection.ids):
                collection._replace(tuple(keep))
                logger.warning(
                    "%s devices lost (%s); now %s",
                    collection.role,
                    source,
                    ", ".join(collection.ids),
                )
                self._outputs_changed(collection.role)
        if self._input_id is not None and self._input_id in removed:
            lost.append(self._input_info(self._input_selected or self._input_id))
            task = asyncio.get_running_loop().create_task(self._replace_lost_input())
            self._keep(task)
        return list(dict.fromkeys(lost))

    async def _devices_added(self) -> None:
        """A card appeared: what fell back to silence may have its device again
        (a USB headset plugged back in)."""
        for role in ("speaker", "ringtone"):
            self._outputs_changed(role)
        target = self._current_input_target()
        in_use = bool(self._taps) or self._input_selected is not None
        if in_use and self._input_id == "null" and target != "null":
            try:
                await self._switch_input(target)
            except AudioDeviceError as exc:
                logger.info("audio input %s still unusable: %s", target, exc)

    async def _replace_lost_input(self) -> None:
        await self._stop_input_task()
        await self._input_lost()

    # ---- polling ------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self._poll_once()
            except Exception:  # supervision boundary of the polling task
                logger.exception("audio device poll failed")
            await asyncio.sleep(self.poll_interval_s)

    async def _poll_once(self) -> None:
        from appliance.hardware.audio_alsa import DeviceSetTracker

        try:
            devices = await asyncio.to_thread(self._lister)
        except (AudioDeviceError, OSError) as exc:
            if not self._list_warned:
                self._list_warned = True
                logger.info("no ALSA device listing (%s); virtual devices only", exc)
            devices = []
        self._alsa = devices
        if self._tracker is None:
            self._tracker = DeviceSetTracker(devices)
            return
        change = self._tracker.update(devices)
        if change is None:
            return
        self.device_changes += 1
        lost = self._lose_devices(set(change.removed_ids), source="unplugged")
        if change.added_ids:
            await self._devices_added()
        logger.info(
            "audio devices changed: +%s -%s",
            sorted(change.added_ids),
            sorted(change.removed_ids),
        )
        self._events.emit("device_change", lost)

    # ---- engine interface (Device) -------------------------------------------

    def _call_source(self) -> AudioSource:
        """A source for a new call's media (the current input device)."""
        tap = _CallSource(self)
        self._taps.append(tap)
        return tap

    def _call_sink(self) -> AudioSink:
        """A sink for a new call's media: plays on every speaker device.

        Raises:
            AudioDeviceError: no speaker device can be opened.
        """
        sink = FanOutSink(self._call_sink_closed)
        self._retarget_call(
            sink, self._role_devices("speaker"), self._role_gain("speaker")
        )
        if not sink.streams:
            sink.close()
            raise AudioDeviceError(message="no speaker device could be opened")
        self._calls.append(sink)
        return sink

    def _call_sink_closed(self, sink: FanOutSink) -> None:
        if sink in self._calls:
            self._calls.remove(sink)
        # The call's media is closing: its key clicks and answer chime end
        # with it, so a file: recording is complete when the media is closed.
        for playback in self._role_playbacks["speaker"]:
            playback.stop_now()

    async def _ring(
        self,
        call: object,
        *,
        ring: bool = True,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """Start the ring for ``call``; return once it plays, or after 2 s.

        ``wanted`` is asked again after the (possibly downloaded) sound is
        ready: a caller who gave up meanwhile must not leave a ring looping.
        """
        if not ring or not self._flags["incoming"]:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RING_START_TIMEOUT_S
        try:
            sound = await asyncio.wait_for(self.sound("incoming"), RING_START_TIMEOUT_S)
        except TimeoutError:
            sound = default_sound("incoming", country=self._country)
        if id(call) in self._rings or not wanted():
            return
        playback = self.play(sound, "ringtone")
        self._rings[id(call)] = playback
        await wait_event(playback.started, max(0.0, deadline - loop.time()))

    def _stop_ring(self, call: object) -> None:
        playback = self._rings.pop(id(call), None)
        if playback is not None:
            playback.stop()

    def _call_opened(self, call: object, *, outgoing: bool) -> None:
        self._stop_ring(call)
        self._opened_calls.add(id(call))
        if outgoing and self._flags["outgoing"]:
            self._spawn(self.play_named("outgoing"))

    def _call_ended(self, call: object) -> None:
        self._stop_ring(call)
        if id(call) in self._opened_calls:
            # Only a call that was answered gets the disconnect sound: not a
            # cancelled, rejected or ignored one (signaling-protocol.md §7).
            self._opened_calls.discard(id(call))
            if self._flags["disconnect"]:
                self._spawn(self.play_named("disconnect"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._keep(task)

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("audio task failed", exc_info=task.exception())
