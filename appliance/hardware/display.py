"""OLED output: wraps a luma device and writes frames off the event loop.

Wiring: the SSD1306/SH1106 module sits on I2C bus 1 (GPIO 2 SDA, GPIO 3 SCL,
header pins 3 and 5) at address 0x3C, see ``hw/wiring.md``.

A full 128x64 frame is 1 KiB over I2C; at the default 100 kHz bus clock that
is roughly 100 ms of blocking ``write`` calls in luma. :class:`Display` keeps
only the newest frame, writes it with :func:`asyncio.to_thread` and at most
``max_fps`` times per second, so a slow bus never delays keys or audio on the
loop (style guide 4.4). Frames replaced before they were written are counted
in :attr:`Display.frames_dropped`.

Example::

    device = create_device(DisplaySpec(driver="dummy"))
    async with Display(device, max_fps=10) as display:
        display.show(render(panel.view()))
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from PIL import Image

from appliance.errors import ConfigError, HardwareError
from appliance.files import write_atomic
from appliance.hardware.pinmap import DisplaySpec

__all__ = [
    "Display",
    "LumaDevice",
    "MirroredDevice",
    "create_device",
    "register_display_driver",
]

logger = logging.getLogger(__name__)


class LumaDevice(Protocol):
    """The part of a luma device we use (any luma.core device qualifies)."""

    mode: str

    @property
    def size(self) -> tuple[int, int]:
        """Logical (rotated) size in pixels."""
        ...

    def display(self, image: Image.Image) -> None:
        """Write ``image`` to the panel (blocking)."""
        ...


#: Display drivers beyond the built-in ones, by name (the simulator adds
#: ``terminal``); each makes a luma-compatible device from the spec.
_EXTRA_DRIVERS: dict[str, Callable[[DisplaySpec], Any]] = {}


def register_display_driver(name: str, factory: Callable[[DisplaySpec], Any]) -> None:
    """Make ``display.driver = NAME`` create its device with ``factory``.

    The device needs ``display(image)``, ``size`` and ``mode`` (as luma's).
    """
    _EXTRA_DRIVERS[name] = factory


def create_device(spec: DisplaySpec) -> Any:
    """Create the luma device described by ``spec``.

    ``ssd1306`` and ``sh1106`` open I2C bus ``spec.i2c_port`` at
    ``spec.address``; ``dummy`` keeps the last frame in memory (tests);
    registered drivers (:func:`register_display_driver`) make their own.

    Raises:
        ConfigError: unknown driver.
        HardwareError: the I2C bus or device cannot be opened.
    """
    extra = _EXTRA_DRIVERS.get(spec.driver)
    if extra is not None:
        return extra(spec)
    if spec.driver == "dummy":
        from luma.core.device import dummy

        return dummy(width=spec.width, height=spec.height, rotate=spec.rotate, mode="1")
    if spec.driver not in ("ssd1306", "sh1106"):
        raise ConfigError("display.driver", f"unknown display driver {spec.driver!r}")
    from luma.core.error import DeviceNotFoundError, DevicePermissionError
    from luma.core.interface.serial import i2c
    from luma.oled.device import sh1106, ssd1306

    driver = ssd1306 if spec.driver == "ssd1306" else sh1106
    try:
        serial = i2c(port=spec.i2c_port, address=spec.address)
        return driver(serial, width=spec.width, height=spec.height, rotate=spec.rotate)
    except (DeviceNotFoundError, DevicePermissionError, OSError) as exc:
        raise HardwareError(
            f"cannot open {spec.driver} on I2C bus {spec.i2c_port} "
            f"at 0x{spec.address:02X}: {exc}"
        ) from exc


class MirroredDevice:
    """A luma device whose every frame is also saved as a PNG (``ui.screen_file``).

    Support staff (and tests of the service as a process) see what the OLED
    shows without looking at it. The file is replaced atomically after each
    frame, from the display's writer thread; the wrapped device's own
    ``image`` is saved when it keeps one (luma's ``dummy``), else the frame.
    A frame that cannot be saved is logged and shown anyway.
    """

    def __init__(self, device: Any, path: Path) -> None:
        self.device = device
        self.path = path
        self.mode: str = device.mode

    @property
    def size(self) -> tuple[int, int]:
        """The wrapped device's size."""
        width, height = self.device.size
        return int(width), int(height)

    @property
    def persist(self) -> bool:
        """Whether luma leaves the last frame lit at exit (luma's flag)."""
        return bool(getattr(self.device, "persist", False))

    @persist.setter
    def persist(self, value: bool) -> None:
        self.device.persist = value

    def display(self, image: Image.Image) -> None:
        """Show ``image``, then save what the device shows."""
        self.device.display(image)
        shown = getattr(self.device, "image", None)
        png = io.BytesIO()
        (shown if isinstance(shown, Image.Image) else image).save(png, format="PNG")
        try:
            write_atomic(self.path, png.getvalue(), mode=0o644)
        except OSError as exc:
            logger.warning("cannot save the screen to %s: %s", self.path, exc)


class Display:
    """Coalescing, rate-limited frame writer for a luma device.

    Args:
        device: a luma device (see :func:`create_device`).
        max_fps: the most frames written per second.

    Call :meth:`start` on the running loop (or use ``async with``).
    """

    def __init__(self, device: LumaDevice, *, max_fps: float = 10.0) -> None:
        if max_fps <= 0:
            raise ValueError("max_fps must be positive")
        self._device = device
        self._interval_s = 1.0 / max_fps
        self._pending: Image.Image | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.frames_written = 0
        """Frames handed to the device."""
        self.frames_dropped = 0
        """Frames replaced by a newer one before they were written."""
        self.write_errors = 0
        """Frames the device failed to write (logged, then skipped)."""

    @property
    def device(self) -> LumaDevice:
        """The wrapped luma device."""
        return self._device

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._writer(), name="display-writer"
            )

    def show(self, image: Image.Image) -> None:
        """Queue ``image`` as the next frame, replacing any unwritten one.

        Never blocks. The image is converted to the device mode if needed.

        Raises:
            ValueError: the image size is not the device size.
        """
        if image.size != tuple(self._device.size):
            raise ValueError(f"frame is {image.size}, display is {self._device.size}")
        if image.mode != self._device.mode:
            image = image.convert(self._device.mode)
        if self._pending is not None:
            self.frames_dropped += 1
        self._pending = image
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until the newest frame has been written."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Write the pending frame, then stop the writer task."""
        if self._task is None:
            return
        if not self._task.done():
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def __aenter__(self) -> Display:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            image, self._pending = self._pending, None
            if image is None:
                continue
            started = loop.time()
            try:
                await asyncio.to_thread(self._device.display, image)
            except OSError as exc:
                # An I2C hiccup (EIO/EREMOTEIO): skip this frame, keep going.
                self.write_errors += 1
                logger.warning("display write failed: %s", exc)
            else:
                self.frames_written += 1
            if self._pending is None:
                self._idle.set()
            # Rate limit: frames shown meanwhile wait here and coalesce.
            await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))
