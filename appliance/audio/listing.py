"""Which devices Device.audio can offer: the seed's device lists.

``default`` and ``null`` are always there, plus what the backend's
:class:`~appliance.media.listing.DeviceMonitor` lists (ALSA PCMs on a phone).
``tone:`` and ``file:`` ids are virtual: they cannot be listed but can be
selected; a listed kind (``alsa:``) must be in the current listing, so a
stale id is "not found", as in the seed.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.audio.collection import AudioDeviceInfo, AudioOptions, DeviceKind
from appliance.errors import AudioDeviceError
from appliance.media.devices import parse_device_id
from appliance.media.listing import DeviceMonitor

__all__ = ["DeviceListing"]


class DeviceListing:
    """The devices on offer (see the module docstring).

    Args:
        monitor: the backend's listing, or None (virtual devices only).
        options: the Device's options (for the labels of ``default``).
    """

    def __init__(
        self, monitor: DeviceMonitor | None, options: Callable[[], AudioOptions]
    ) -> None:
        self.monitor = monitor
        self._options = options

    async def refresh(self) -> None:
        """List the devices now if they were never listed."""
        if self.monitor is not None and self.monitor.devices is None:
            await self.monitor.poll()

    def _devices(
        self, direction: str, kind: DeviceKind, default_id: str, null_label: str
    ) -> dict[str, AudioDeviceInfo]:
        found = {
            "default": AudioDeviceInfo("default", f"Default ({default_id})", kind),
            "null": AudioDeviceInfo("null", null_label, kind),
        }
        devices = self.monitor.devices if self.monitor is not None else None
        for device in devices or ():
            if device.direction == direction:
                found[device.id] = AudioDeviceInfo(device.id, device.label, kind)
        return found

    def inputs(self) -> dict[str, AudioDeviceInfo]:
        """Input devices by id: ``default``, ``null`` and the listed ones."""
        return self._devices(
            "input", "audioinput", self._options().input_device, "No input (silence)"
        )

    def outputs(self) -> dict[str, AudioDeviceInfo]:
        """Output devices by id: ``default``, ``null`` and the listed ones."""
        return self._devices(
            "output",
            "audiooutput",
            self._options().output_device,
            "No output (discard)",
        )

    def input_info(self, device_id: str) -> AudioDeviceInfo:
        """The listed input, or a bare one for an id that is not listed."""
        known = self.inputs().get(device_id)
        return known or AudioDeviceInfo(device_id, device_id, "audioinput")

    def output_info(self, device_id: str) -> AudioDeviceInfo:
        """The listed output, or a bare one for an id that is not listed."""
        known = self.outputs().get(device_id)
        return known or AudioDeviceInfo(device_id, device_id, "audiooutput")

    async def check(self, ids: tuple[str, ...], kind: str) -> None:
        """Raise unless each id is listed or a valid virtual id of ``kind``.

        Raises:
            AudioDeviceError: (31402) malformed, unknown kind, or a listed
                kind (``alsa:``) that is not in the listing (stale id).
        """
        await self.refresh()
        available = self.inputs() if kind == "input" else self.outputs()
        for device_id in ids:
            if device_id in available:
                continue
            parsed = parse_device_id(device_id)  # raises AudioDeviceError 31402
            virtual = ("tone", "file") if kind == "input" else ("file",)
            if parsed.kind not in virtual:
                raise AudioDeviceError(
                    message=f"{kind} device {device_id!r} not found (available: "
                    f"{', '.join(sorted(available))})"
                )
