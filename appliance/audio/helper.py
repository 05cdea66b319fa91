"""AudioHelper: ``device.audio``, the seed's Device.audio in snake_case.

A facade over the parts of the audio layer, one job each:

==============================  ============================================
:mod:`appliance.audio.inputs`   the microphone: selection, metering, call taps
:mod:`appliance.audio.outputs`  speaker/ringtone roles, mixers, call sinks
:mod:`appliance.audio.soundbank` custom and default sounds, ring country
:mod:`appliance.audio.ringer`   ring, answer/hang-up chimes, key clicks
:mod:`appliance.audio.hotplug`  devices that come and go (the backend's monitor)
:mod:`appliance.audio.listing`  the device lists of the seed
==============================  ============================================

The facade holds the seed's API (device lists, input selection, constraints,
sound flags, ``speaker_devices``/``ringtone_devices``, events) and, with
public names, the :class:`~appliance.phone.ports.CallAudio` port the Device
drives calls through (``call_source``, ``call_sink``, ``ring``, ...). It
never imports the engine: what it needs from its Device is the
:class:`~appliance.audio.collection.AudioHost` Protocol, bound with
:meth:`AudioHelper.bind`.

Events (``device.audio.on(name, handler)``): ``device_change(lost)`` with a
list of :class:`AudioDeviceInfo` (active speaker, ringtone or input devices
that disappeared), and ``input_volume(volume)``.

Example (the composition root builds it and hands it to the Device)::

    audio = AudioHelper(monitor=CardMonitor())
    device = Device(audio=audio, input_device="alsa:plughw:CARD=Headset")
    await device.audio.speaker_devices.set("alsa:plughw:CARD=Headset")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from appliance.audio.collection import (
    AudioDeviceInfo,
    AudioHost,
    AudioOptions,
    AudioOutputCollection,
    Role,
)
from appliance.audio.hotplug import HotPlug
from appliance.audio.inputs import InputPath
from appliance.audio.listing import DeviceListing
from appliance.audio.loader import SoundLoader
from appliance.audio.mixer import OutputMixer, Playback
from appliance.audio.outputs import OutputRouter
from appliance.audio.ringer import Ringer
from appliance.audio.soundbank import SoundBank
from appliance.audio.sounds import Sound
from appliance.audio.speakerphone import Speakerphone, settings_for
from appliance.errors import InvalidArgumentError, InvalidStateError, TwilioError
from appliance.events import Emitter, EventSource
from appliance.media.devices import backend_monitor, open_sink, open_source
from appliance.media.frames import AudioSink, AudioSource
from appliance.media.listing import DeviceMonitor

__all__ = ["AUDIO_EVENTS", "CONSTRAINT_KEYS", "AudioHelper"]

logger = logging.getLogger(__name__)

AUDIO_EVENTS = frozenset({"device_change", "input_volume"})
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


class AudioHelper(EventSource):
    """``device.audio``: devices, sounds and their events (see module docstring).

    Args:
        host: the Device; usually left out and bound by the Device itself.
        monitor: lists the devices and reports hot-plug; by default the
            monitor of the installed backend that can list (ALSA).
        source_opener: opens input device ids (default ``open_source``).
        sink_opener: opens output device ids (default ``open_sink``).
        loader: fetches custom sounds (default: cache in ``default_cache_dir()``).
        speakerphone: what ``audio_constraints=True`` (the default) means:
            True runs echo cancellation, noise suppression and AGC on the
            microphone, False leaves it as the device gives it
            (``appliance.audio.speakerphone``).
    """

    def __init__(
        self,
        host: AudioHost | None = None,
        *,
        monitor: DeviceMonitor | None = None,
        source_opener: Callable[[str], AudioSource] = open_source,
        sink_opener: Callable[[str], AudioSink] = open_sink,
        loader: SoundLoader | None = None,
        speakerphone: bool = False,
    ) -> None:
        self._host = host
        self._events = Emitter(AUDIO_EVENTS)
        self._open_source = source_opener
        self._open_sink = sink_opener
        self._listing = DeviceListing(
            monitor if monitor is not None else backend_monitor(), self._options
        )
        self.sounds = SoundBank(loader or SoundLoader(), self._options, self._error)
        self._outputs = OutputRouter(
            self._listing, self._options, sink_opener, self.sounds, self.sounds.loader
        )
        self._inputs = InputPath(
            self._listing, self._options, source_opener, self._events.emit
        )
        self._ringer = Ringer(self._outputs, self.sounds)
        self._hotplug = HotPlug(
            self._listing, self._outputs, self._inputs, self._events.emit
        )
        self._outputs.on_lost = lambda ids, why: self._hotplug.lose(ids, source=why)
        self._constraints: dict[str, Any] | None = None
        self._speakerphone_default = speakerphone
        self._speakerphone = Speakerphone(self._echo_device)
        self._outputs.on_frame = self._speakerphone.played
        self._inputs.process = self._speakerphone.process

    def bind(self, host: AudioHost) -> None:
        """Serve ``host`` (the Device calls this when it is given this helper).

        Raises:
            InvalidStateError: already bound to another Device.
        """
        if self._host is not None and self._host is not host:
            raise InvalidStateError(message="this device.audio belongs to a Device")
        self._host = host

    def _options(self) -> AudioOptions:
        if self._host is None:
            raise InvalidStateError(message="device.audio is not bound to a Device")
        return self._host.options

    def _error(self, error: TwilioError) -> None:
        if self._host is not None:
            self._host.report_error(error)

    # ---- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start watching devices and loading custom sounds (Device.setup)."""
        self._apply_constraints()
        self._hotplug.start()
        self.sounds.load_custom()

    async def close(self) -> None:
        """Stop watching, every sound, the input and every mixer (Device.destroy).

        The helper can be started again afterwards.
        """
        await self._hotplug.stop()
        await self.sounds.close()
        await self._ringer.close()
        await self._inputs.close()
        self._outputs.close()
        self._speakerphone.close()
        await self._events.drain()

    def check_devices(self) -> list[str]:
        """Open the input device and each speaker device once, then close them.

        A phone that cannot open its sound card cannot carry a call: the
        service checks at start (the ``audio`` fact of an update's health
        check). A device open now (a call, a ring) counts as opened. Returns
        the ids checked.

        Raises:
            AudioDeviceError: a device cannot be opened.
        """
        checked = []
        if self._inputs.current_id is None:
            input_id = self._options().input_device
            self._open_source(input_id).close()
            checked.append(input_id)
        for device_id in self._outputs.role_devices("speaker"):
            if device_id not in self._outputs.mixers:
                self._open_sink(device_id).close()
            checked.append(device_id)
        return checked

    # ---- device lists -----------------------------------------------------------

    @property
    def available_input_devices(self) -> dict[str, AudioDeviceInfo]:
        """Input devices by id: ``default``, ``null`` and the listed PCMs."""
        return self._listing.inputs()

    @property
    def available_output_devices(self) -> dict[str, AudioDeviceInfo]:
        """Output devices by id: ``default``, ``null`` and the listed PCMs."""
        return self._listing.outputs()

    async def refresh_devices(self) -> None:
        """List the devices now, and finish reacting to what came or went."""
        await self._hotplug.poll()

    @property
    def device_changes(self) -> int:
        """Device changes handled so far (diagnostics)."""
        return self._hotplug.changes

    @property
    def speaker_devices(self) -> AudioOutputCollection:
        """Where call audio and the speaker sounds play (seed)."""
        return self._outputs.speaker_devices

    @property
    def ringtone_devices(self) -> AudioOutputCollection:
        """Where the ring plays (seed)."""
        return self._outputs.ringtone_devices

    @property
    def mixers(self) -> Mapping[str, OutputMixer]:
        """The mixer of each output device in use (diagnostics)."""
        return self._outputs.mixers

    # ---- input --------------------------------------------------------------------

    @property
    def input_device(self) -> AudioDeviceInfo | None:
        """The device chosen with :meth:`set_input_device`, or None."""
        return self._inputs.selected

    @property
    def input_device_in_use(self) -> str | None:
        """The id of the input open now (``null`` after a fallback), or None."""
        return self._inputs.current_id

    async def set_input_device(self, device_id: str) -> None:
        """Use ``device_id`` as the microphone, now and for later calls.

        The device is opened at once (so failures show here) and metered:
        ``input_volume`` events flow until :meth:`unset_input_device`.

        Raises:
            InvalidArgumentError: not a non-empty string.
            AudioDeviceError: (31402) unknown device, or it cannot be opened.
        """
        await self._inputs.select(device_id)

    async def unset_input_device(self) -> None:
        """Forget the selected input; stops metering. A call goes back to default."""
        await self._inputs.unselect()

    # ---- audio constraints --------------------------------------------------------

    @property
    def audio_constraints(self) -> dict[str, Any] | None:
        """The constraints set by :meth:`set_audio_constraints`; starts as None."""
        return None if self._constraints is None else dict(self._constraints)

    @property
    def audio_constraints_applied(self) -> bool:
        """Whether echo cancellation, noise suppression or AGC runs on the input."""
        return self._speakerphone.applied

    async def set_audio_constraints(self, constraints: Mapping[str, Any]) -> None:
        """Apply constraints to the input (they override the Device option).

        ``echo_cancellation``, ``noise_suppression`` and ``auto_gain_control``
        switch the processing (``appliance.audio.speakerphone``); the other
        keys are validated and kept for the seed's API. ``device_id`` is
        ignored, as in the seed: select the device with
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
        self._apply_constraints()

    async def unset_audio_constraints(self) -> None:
        """Forget the constraints (back to None and the Device option)."""
        self._constraints = None
        self._apply_constraints()

    def _apply_constraints(self) -> None:
        wanted: bool | Mapping[str, Any] = True
        if self._constraints is not None:
            wanted = self._constraints
        elif self._host is not None:
            wanted = self._options().audio_constraints
        self._speakerphone.configure(
            settings_for(wanted, default_on=self._speakerphone_default)
        )

    def _echo_device(self) -> str | None:
        speakers = self._outputs.role_devices("speaker")
        return speakers[0] if speakers else None

    # ---- sound flags, country, sounds -----------------------------------------------

    def incoming(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether the ``incoming`` ring plays."""
        return self._ringer.flag("incoming", enabled)

    def outgoing(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether ``outgoing`` plays when a call is answered."""
        return self._ringer.flag("outgoing", enabled)

    def disconnect(self, enabled: bool | None = None) -> bool:
        """Get, or set and get, whether ``disconnect`` plays when a call ends."""
        return self._ringer.flag("disconnect", enabled)

    @property
    def country(self) -> str:
        """Country of the generated ring (appliance.cadence; default US)."""
        return self.sounds.country

    @country.setter
    def country(self, value: str) -> None:
        self.sounds.country = value

    async def sound(self, name: str) -> Sound:
        """The sound for ``name``: custom if loaded (awaits a download), else default.

        Raises:
            KeyError: unknown name.
        """
        return await self.sounds.sound(name)

    def play(self, sound: Sound, role: Role = "speaker") -> Playback:
        """Play ``sound`` on the devices of ``role`` (speaker or ringtone)."""
        return self._outputs.play(sound, role)

    async def play_named(self, name: str, role: Role = "speaker") -> Playback:
        """Play the seed's sound ``name`` (custom or default) on ``role``."""
        return await self._ringer.play_named(name, role)

    def play_dtmf(self, digit: str) -> Playback:
        """Local key feedback for ``digit`` on the speaker devices (front panel).

        Raises:
            InvalidArgumentError: not 0-9, * or #.
        """
        return self._ringer.play_dtmf(digit)

    # ---- the CallAudio port (appliance.phone.ports) -----------------------------

    def call_source(self) -> AudioSource:
        """A source for a new call's media (the current input device)."""
        return self._inputs.call_source()

    def call_sink(self) -> AudioSink:
        """A sink for a new call's media: plays on every speaker device.

        Raises:
            AudioDeviceError: no speaker device can be opened.
        """
        return self._outputs.call_sink()

    async def ring(
        self,
        call: object,
        *,
        ring: bool = True,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """Start the ring for ``call``; return once it plays, or after 2 s."""
        await self._ringer.ring(call, ring=ring, wanted=wanted)

    def stop_ring(self, call: object) -> None:
        """Stop the ring of ``call``, if it rings."""
        self._ringer.stop_ring(call)

    def call_opened(self, call: object, *, outgoing: bool) -> None:
        """The call was answered (ring off; ``outgoing`` chime if outgoing)."""
        self._ringer.call_opened(call, outgoing=outgoing)

    def call_ended(self, call: object) -> None:
        """The call ended (ring off; ``disconnect`` chime if it was answered)."""
        self._ringer.call_ended(call)
