"""Hot-plug: what Device.audio does when an audio device comes or goes.

:class:`HotPlug` subscribes to the monitor while the Device is set up. A
removed device is dropped from the active speaker/ringtone sets and the
input (each falls back to ``default``); calls continue (anchors.md §5:
baresip#2433 and pjsip#3132 crashed or went silent on unplug). An added one
lets what fell back to silence use its device again (a USB headset plugged
back in). Every change emits ``device_change(lost_active_devices)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.audio.collection import AudioDeviceInfo
from appliance.audio.inputs import InputPath
from appliance.audio.listing import DeviceListing
from appliance.audio.outputs import OutputRouter
from appliance.media.listing import DeviceChange
from appliance.tasks import TaskSet

__all__ = ["HotPlug"]

logger = logging.getLogger(__name__)


class HotPlug:
    """Reacts to the monitor's changes (see the module docstring).

    Args:
        listing: the devices on offer (its monitor is subscribed to).
        outputs: the output router (speaker/ringtone sets, call audio).
        inputs: the input path (microphone).
        emit: emits ``device_change`` on Device.audio.
    """

    def __init__(
        self,
        listing: DeviceListing,
        outputs: OutputRouter,
        inputs: InputPath,
        emit: Callable[..., None],
    ) -> None:
        self._listing = listing
        self._outputs = outputs
        self._inputs = inputs
        self._emit = emit
        self._tasks = TaskSet(logger, "hot-plug")
        self._subscribed = False
        #: Device changes handled so far (tests and diagnostics).
        self.changes = 0

    def start(self) -> None:
        """Subscribe to the monitor (Device.setup)."""
        if self._listing.monitor is not None:
            self._listing.monitor.start(self._changed)
            self._subscribed = True

    async def stop(self) -> None:
        """Unsubscribe and finish what a change started (Device.destroy)."""
        if self._listing.monitor is not None:
            await self._listing.monitor.stop()
        self._subscribed = False
        await self._tasks.close()

    async def poll(self) -> None:
        """List the devices now and finish handling what changed."""
        if self._listing.monitor is None:
            return
        change = await self._listing.monitor.poll()
        if change is not None and not self._subscribed:
            self._changed(change)  # a subscribed monitor has called it already
        await self._tasks.wait()

    def _changed(self, change: DeviceChange) -> None:
        self.changes += 1
        lost = self.lose(set(change.removed_ids), source="unplugged")
        self._tasks.spawn(self._settle(change, lost), "audio-hotplug")

    async def _settle(self, change: DeviceChange, lost: list[AudioDeviceInfo]) -> None:
        if change.added_ids:
            self._outputs.devices_added()
            await self._inputs.devices_added()
        self._emit("device_change", lost)

    def lose(self, removed: set[str], *, source: str) -> list[AudioDeviceInfo]:
        """Drop ``removed`` ids wherever they are active; return what was lost."""
        lost = self._outputs.lose(removed, source=source)
        lost += self._inputs.lose(removed)
        return list(dict.fromkeys(lost))
