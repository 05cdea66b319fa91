"""Where Device.audio plays: output roles, one mixer per device, call sinks.

Two roles share the output devices: ``speaker`` (call audio and the
``outgoing``/``disconnect``/DTMF sounds) and ``ringtone`` (``incoming``),
each an :class:`~appliance.audio.collection.AudioOutputCollection` of device
ids (``default`` means the Device's ``output_device``). There is one
:class:`~appliance.audio.mixer.OutputMixer` per device id in use, shared by
both roles, so a ring can play on one card while a call plays on another, or
both on one.

When a role's devices or volume change, what plays for it moves at once: the
call's :class:`~appliance.audio.mixer.FanOutSink` is re-attached, and sounds
that still play are stopped on devices no longer wanted and started on the
new ones. A mixer whose device fails (unplugged, disk full for ``file:``) is
treated as an unplug of that device.

``file:`` outputs are recordings: reopening one would truncate it, so a
recording covers one stretch of activity (a call with its ring and sounds);
a later call appends to it (the file is rewritten with the old audio first).
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable, Mapping

import numpy as np

from appliance.audio.collection import (
    AudioDeviceInfo,
    AudioOptions,
    AudioOutputCollection,
    Role,
)
from appliance.audio.listing import DeviceListing
from appliance.audio.loader import SoundLoader
from appliance.audio.mixer import FanOutSink, OutputMixer, Playback, SoundInput
from appliance.audio.soundbank import SoundBank
from appliance.audio.sounds import Sound
from appliance.errors import AudioDeviceError
from appliance.media.frames import AudioSink, Samples

__all__ = ["OutputRouter"]

logger = logging.getLogger(__name__)

#: Called with device ids that failed, and why (an unplug to the rest).
LostCallback = Callable[[set[str], str], object]


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


class OutputRouter:
    """The output side of Device.audio (see the module docstring).

    Args:
        listing: the devices on offer.
        options: the Device's options in force.
        sink_opener: opens an output device id.
        sounds: gives the ``outgoing`` sound for device tests.
        loader: loads a test sound from a path or URL.
    """

    def __init__(
        self,
        listing: DeviceListing,
        options: Callable[[], AudioOptions],
        sink_opener: Callable[[str], AudioSink],
        sounds: SoundBank,
        loader: SoundLoader,
    ) -> None:
        self._listing = listing
        self._options = options
        self._open_sink = sink_opener
        self._sounds = sounds
        self._loader = loader
        self.speaker_devices = AudioOutputCollection(self, "speaker")
        self.ringtone_devices = AudioOutputCollection(self, "ringtone")
        #: Called when a mixer's device fails (set by the owner).
        self.on_lost: LostCallback = lambda _ids, _why: None
        #: Called with (device id, frame) for each frame written to a device.
        self.on_frame: Callable[[str, Samples], None] | None = None
        self._mixers: dict[str, OutputMixer] = {}
        self._recordings: set[str] = set()  # file: outputs opened once already
        self._append_ok: set[str] = set()  # ...that a new call may reopen
        self._calls: list[FanOutSink] = []
        self._role_playbacks: dict[Role, list[Playback]] = {
            "speaker": [],
            "ringtone": [],
        }

    @property
    def mixers(self) -> Mapping[str, OutputMixer]:
        """The mixer of each device id in use (diagnostics and tests)."""
        return dict(self._mixers)

    def close(self) -> None:
        """Detach every call and close every mixer (Device.destroy)."""
        for sink in list(self._calls):
            sink.close()
        for mixer in list(self._mixers.values()):
            mixer.close()
        self._mixers.clear()

    # ---- what the collections ask -------------------------------------------

    def output_info(self, device_id: str) -> AudioDeviceInfo:
        """The listed device, or a bare one for an id that is not listed."""
        return self._listing.output_info(device_id)

    async def check_outputs(self, ids: tuple[str, ...]) -> None:
        """Raise AudioDeviceError (31402) unless every id can be an output."""
        await self._listing.check(ids, "output")

    def collection(self, role: Role) -> AudioOutputCollection:
        """The collection of ``role``."""
        return self.speaker_devices if role == "speaker" else self.ringtone_devices

    def role_devices(self, role: Role) -> list[str]:
        """The device ids ``role`` plays on, ``default`` resolved."""
        return list(dict.fromkeys(self._resolve(i) for i in self.collection(role).ids))

    def _resolve(self, device_id: str) -> str:
        return self._options().output_device if device_id == "default" else device_id

    # ---- playing ------------------------------------------------------------

    def play(self, sound: Sound, role: Role = "speaker") -> Playback:
        """Play ``sound`` on the devices of ``role`` (speaker or ringtone).

        Devices that cannot be opened are recorded in ``Playback.errors``.
        """
        playback = Playback(sound)
        gain = self.collection(role).volume
        for device_id in self.role_devices(role):
            self._start_on(playback, device_id, gain)
        playback.seal()
        active = self._role_playbacks[role]
        active[:] = [p for p in active if p.playing]
        if playback.playing:
            active.append(playback)
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

    async def test_outputs(
        self, collection: AudioOutputCollection, location: str | None
    ) -> None:
        """Play ``outgoing`` (or the sound at ``location``) and wait for it.

        Raises:
            AudioDeviceError: no active devices, or a device failed to play.
            SoundLoadError: the given sound cannot be loaded.
        """
        if not collection.ids:
            raise AudioDeviceError(message="no active devices to test")
        if location is None:
            sound = await self._sounds.sound("outgoing")
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

    def stop_role(self, role: Role) -> None:
        """Stop what plays for ``role`` at once (its mixers may close)."""
        for playback in self._role_playbacks[role]:
            playback.stop_now()

    # ---- the call's sink ----------------------------------------------------

    def call_sink(self) -> AudioSink:
        """A sink for a new call's media: plays on every speaker device.

        Raises:
            AudioDeviceError: no speaker device can be opened.
        """
        sink = FanOutSink(self._call_sink_closed)
        self._retarget_call(
            sink, self.role_devices("speaker"), self.speaker_devices.volume
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
        self.stop_role("speaker")

    # ---- mixers and recordings ----------------------------------------------

    def _mixer(self, device_id: str) -> OutputMixer:
        mixer = self._mixers.get(device_id)
        if mixer is None or mixer.closed:
            mixer = OutputMixer(
                device_id, opener=self._open_output, on_failed=self._output_failed
            )
            mixer.monitor = lambda frame: self._frame_written(device_id, frame)
            self._mixers[device_id] = mixer
        return mixer

    def _frame_written(self, device_id: str, frame: Samples) -> None:
        if self.on_frame is not None:
            self.on_frame(device_id, frame)

    def _open_output(self, device_id: str) -> AudioSink:
        """Open an output for a mixer; a ``file:`` recording only once.

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

    # ---- changes and failures -----------------------------------------------

    def outputs_changed(self, role: Role) -> None:
        """Move what plays for ``role`` to its current devices and volume."""
        wanted = self.role_devices(role)
        gain = self.collection(role).volume
        if role == "speaker":
            for sink in list(self._calls):
                self._retarget_call(sink, wanted, gain)
        for playback in list(self._role_playbacks[role]):
            if not playback.playing:
                continue
            for item in playback.inputs:
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
            playback.reopen()
            for device_id in wanted:
                if device_id not in playing_on:
                    self._start_on(playback, device_id, gain)
            playback.seal()

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
        self.on_lost({device_id}, "output failure")

    def lose(self, removed: set[str], *, source: str) -> list[AudioDeviceInfo]:
        """Drop ``removed`` ids from both roles (each falls back to default)."""
        lost: list[AudioDeviceInfo] = []
        for collection in (self.speaker_devices, self.ringtone_devices):
            keep = []
            for device_id in collection.ids:
                if self._resolve(device_id) in removed:
                    lost.append(self.output_info(device_id))
                else:
                    keep.append(device_id)
            if len(keep) != len(collection.ids):
                collection.fall_back(tuple(keep))
                logger.warning(
                    "%s devices lost (%s); now %s",
                    collection.role,
                    source,
                    ", ".join(collection.ids),
                )
                self.outputs_changed(collection.role)
        return lost

    def devices_added(self) -> None:
        """A card appeared: what fell back may have its device again."""
        for role in ("speaker", "ringtone"):
            self.outputs_changed(role)
