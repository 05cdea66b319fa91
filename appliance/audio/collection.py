"""The types Device.audio speaks in, and the seed's speaker/ringtone sets.

Both ``device.audio.speaker_devices`` and ``device.audio.ringtone_devices`` are
:class:`AudioOutputCollection` objects: a set of active output device ids that
can be replaced at any time (sounds and call audio move to the new devices at
once), tested with a sound, and given a volume. The output router
(:mod:`appliance.audio.outputs`, seen here as :class:`OutputRoles`) does the
work; the collection validates.

:class:`AudioOptions` and :class:`AudioHost` are what the audio layer needs
from the Device that owns it, as Protocols, so that audio never imports the
engine (``appliance.phone``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from appliance.errors import InvalidArgumentError, TwilioError

__all__ = [
    "AudioDeviceInfo",
    "AudioHost",
    "AudioOptions",
    "AudioOutputCollection",
    "DeviceKind",
    "OutputRoles",
    "Role",
]

DeviceKind = Literal["audioinput", "audiooutput"]
Role = Literal["speaker", "ringtone"]


@dataclass(frozen=True, order=True)
class AudioDeviceInfo:
    """A device as the seed's ``MediaDeviceInfo``.

    Attributes:
        device_id: the id to select it with (``alsa:NAME``, ``null``, ``default``...).
        label: human readable name (from the ALSA card name where there is one).
        kind: ``"audioinput"`` or ``"audiooutput"``.
    """

    device_id: str
    label: str
    kind: DeviceKind


class AudioOptions(Protocol):
    """The Device options the audio layer reads (``DeviceOptions`` has them)."""

    @property
    def input_device(self) -> str:
        """The ``default`` input device id."""
        ...

    @property
    def output_device(self) -> str:
        """The ``default`` output device id."""
        ...

    @property
    def sounds(self) -> Mapping[str, str] | None:
        """Custom sounds by name (paths or URLs)."""
        ...

    @property
    def fake_local_dtmf(self) -> bool:
        """Play Twilio's off-standard local key-feedback pairs."""
        ...

    @property
    def audio_constraints(self) -> bool | Mapping[str, Any]:
        """The microphone processing wanted (``appliance.audio.speakerphone``)."""
        ...


class AudioHost(Protocol):
    """What Device.audio needs from its Device."""

    @property
    def options(self) -> AudioOptions:
        """The Device's options in force (they change with ``setup()``)."""
        ...

    def report_error(self, error: TwilioError) -> None:
        """Emit ``error`` on the Device (a custom sound failed to load)."""
        ...


class OutputRoles(Protocol):
    """The output router as an :class:`AudioOutputCollection` uses it."""

    def output_info(self, device_id: str) -> AudioDeviceInfo:
        """The listed device, or a bare one for an id that is not listed."""
        ...

    async def check_outputs(self, ids: tuple[str, ...]) -> None:
        """Raise AudioDeviceError (31402) unless every id can be an output."""
        ...

    def outputs_changed(self, role: Role) -> None:
        """Move what plays for ``role`` to its current devices and volume."""
        ...

    async def test_outputs(
        self, collection: AudioOutputCollection, location: str | None
    ) -> None:
        """Play a test sound on the collection's devices and wait for it."""
        ...


class AudioOutputCollection:
    """The active devices of one output role (seed: AudioOutputCollection).

    Starts as ``{"default"}``, the Device's ``output_device``.
    """

    def __init__(self, router: OutputRoles, role: Role) -> None:
        self._router = router
        self.role: Role = role
        self._ids: tuple[str, ...] = ("default",)
        self._volume = 1.0

    @property
    def ids(self) -> tuple[str, ...]:
        """The active device ids, in the order given to :meth:`set`."""
        return self._ids

    def get(self) -> set[AudioDeviceInfo]:
        """The active devices."""
        return {self._router.output_info(i) for i in self._ids}

    async def set(self, device_ids: str | Iterable[str]) -> None:
        """Replace the active devices; playing audio moves at once.

        Raises:
            InvalidArgumentError: no ids, or an id is not a string.
            AudioDeviceError: (31402) an id is not a known output device.
        """
        ids = (device_ids,) if isinstance(device_ids, str) else tuple(device_ids)
        if not ids:
            raise InvalidArgumentError("device_ids", "must name at least one device")
        if not all(isinstance(i, str) and i for i in ids):
            raise InvalidArgumentError("device_ids", "must be non-empty strings")
        ids = tuple(dict.fromkeys(ids))
        await self._router.check_outputs(ids)
        self._ids = ids
        self._router.outputs_changed(self.role)

    async def test(self, sound: str | None = None) -> None:
        """Play ``outgoing`` (or a WAV path/URL) on the active devices.

        Returns when it has played everywhere.

        Raises:
            AudioDeviceError: no active devices, or a device failed to play.
            SoundLoadError: the given sound cannot be loaded.
        """
        await self._router.test_outputs(self, sound)

    @property
    def volume(self) -> float:
        """Linear gain of everything this role plays (0.0 = mute, 1.0 = as is)."""
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError("volume", "must be a number")
        if not 0.0 <= value <= 4.0:
            raise InvalidArgumentError("volume", "must be within 0.0..4.0")
        self._volume = float(value)
        self._router.outputs_changed(self.role)

    def fall_back(self, ids: tuple[str, ...]) -> None:
        """Set ids without validation (after a device was lost); none = default."""
        self._ids = ids or ("default",)
