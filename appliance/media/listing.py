"""Listed audio devices and hot-plug: the seam between a backend and Device.audio.

A backend that can enumerate its devices (ALSA lists its PCMs) offers a
:class:`DeviceMonitor`: it keeps the current listing and tells its subscriber
what appeared and disappeared. Device.audio (``appliance.audio``) only sees
this Protocol, so the audio layer never imports a hardware backend, and a
test hands in a monitor with a settable listing.

:class:`DeviceSetTracker` is the pure diff both sides share: a device is
identified by (id, direction), and a label change alone is not a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "DeviceChange",
    "DeviceMonitor",
    "DeviceSetTracker",
    "Direction",
    "ListedDevice",
]

Direction = Literal["input", "output"]


@dataclass(frozen=True, order=True)
class ListedDevice:
    """One device a backend found.

    Attributes:
        id: the device id to open it with (``alsa:NAME``).
        label: human label (the card name where there is one).
        direction: ``"input"`` (capture) or ``"output"`` (playback).
    """

    id: str
    label: str
    direction: Direction


@dataclass(frozen=True)
class DeviceChange:
    """Devices that appeared or disappeared since the previous listing."""

    added: tuple[ListedDevice, ...]
    removed: tuple[ListedDevice, ...]

    @property
    def added_ids(self) -> frozenset[str]:
        """Ids of the added devices."""
        return frozenset(d.id for d in self.added)

    @property
    def removed_ids(self) -> frozenset[str]:
        """Ids of the removed devices."""
        return frozenset(d.id for d in self.removed)


class DeviceSetTracker:
    """Pure diff of successive device listings."""

    def __init__(self, initial: Iterable[ListedDevice] = ()) -> None:
        self._devices = {(d.id, d.direction): d for d in initial}

    @property
    def devices(self) -> list[ListedDevice]:
        """The current listing, sorted."""
        return sorted(self._devices.values())

    def update(self, devices: Iterable[ListedDevice]) -> DeviceChange | None:
        """Take a new listing; return what changed, or None."""
        new = {(d.id, d.direction): d for d in devices}
        added = tuple(sorted(new[k] for k in new.keys() - self._devices.keys()))
        removed = tuple(
            sorted(self._devices[k] for k in self._devices.keys() - new.keys())
        )
        self._devices = new
        if not added and not removed:
            return None
        return DeviceChange(added, removed)


ChangeCallback = Callable[[DeviceChange], object]


class DeviceMonitor(Protocol):
    """Keeps a backend's device listing and reports changes (hot-plug)."""

    @property
    def devices(self) -> Sequence[ListedDevice] | None:
        """The latest listing; None until the first one was taken."""
        ...

    async def poll(self) -> DeviceChange | None:
        """List the devices now; report and return the change (None at first)."""
        ...

    def start(self, on_change: ChangeCallback) -> None:
        """Keep listing in a task of the running loop; call ``on_change`` there."""
        ...

    async def stop(self) -> None:
        """Stop listing; :meth:`start` may be called again."""
        ...
