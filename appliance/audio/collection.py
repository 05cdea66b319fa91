"""AudioDeviceInfo and AudioOutputCollection (the seed's speaker/ringtone sets).

Both ``device.audio.speaker_devices`` and ``device.audio.ringtone_devices`` are
:class:`AudioOutputCollection` objects: a set of active output device ids that
can be replaced at any time (sounds and call audio move to the new devices at
once), tested with a sound, and given a volume. The helper
(:mod:`appliance.audio.helper`) does the work; the collection validates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from appliance.errors import InvalidArgumentError

if TYPE_CHECKING:
    from appliance.audio.helper import AudioHelper

__all__ = ["AudioDeviceInfo", "AudioOutputCollection", "DeviceKind", "Role"]

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


class AudioOutputCollection:
    """The active devices of one output role (seed: AudioOutputCollection).

    Starts as ``{"default"}``, the Device's ``output_device``.
    """

    def __init__(self, helper: AudioHelper, role: Role) -> None:
        self._helper = helper
        self.role: Role = role
        self._ids: tuple[str, ...] = ("default",)
        self._volume = 1.0

    @property
    def ids(self) -> tuple[str, ...]:
        """The active device ids, in the order given to :meth:`set`."""
        return self._ids

    def get(self) -> set[AudioDeviceInfo]:
        """The active devices."""
        return {self._helper._output_info(i) for i in self._ids}

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
        await self._helper._check_output_ids(ids)
        self._ids = ids
        self._helper._outputs_changed(self.role)

    async def test(self, sound: str | None = None) -> None:
        """Play ``outgoing`` (or a WAV path/URL) on the active devices.

        Returns when it has played everywhere.

        Raises:
            AudioDeviceError: no active devices, or a device failed to play.
            SoundLoadError: the given sound cannot be loaded.
        """
        await self._helper._test_outputs(self, sound)

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
        self._helper._outputs_changed(self.role)

    def _replace(self, ids: tuple[str, ...]) -> None:
        """Set ids without validation (fallback after a device was lost)."""
        self._ids = ids or ("default",)
