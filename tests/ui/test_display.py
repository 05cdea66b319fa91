"""Display writer: luma dummy device, coalescing and rate limit."""

import asyncio
import threading
import time

import pytest
from luma.core.device import dummy
from PIL import Image, ImageChops

from appliance.errors import ConfigError
from appliance.hardware.display import Display, create_device
from appliance.hardware.pinmap import DisplaySpec
from appliance.ui.screens import render
from appliance.ui.view import PanelView, Screen
from tests.conftest import scaled, wait_until


class SlowDummy(dummy):
    """luma's dummy with the write time of a slow I2C bus, recording frames."""

    def __init__(self, delay_s: float):
        super().__init__(width=128, height=64, mode="1")
        self.delay_s = delay_s
        self.frames: list[Image.Image] = []
        self.threads: set[int] = set()
        self.writing = threading.Event()

    def display(self, image):
        self.writing.set()
        time.sleep(self.delay_s)  # blocking, like luma's smbus writes
        self.threads.add(threading.get_ident())
        super().display(image)
        self.frames.append(self.image)


def frame(text: str) -> Image.Image:
    return render(PanelView(Screen.DIALING, dial_string=text, registered=True))


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


async def test_dummy_device_receives_the_last_frame():
    device = create_device(DisplaySpec(driver="dummy"))
    async with Display(device) as display:
        display.show(frame("1"))
        await display.flush()
        assert same(device.image, frame("1"))
        display.show(frame("12"))
    assert same(device.image, frame("12"))


async def test_intermediate_frames_are_dropped_while_the_bus_is_busy():
    device = SlowDummy(0.05)
    async with Display(device, max_fps=100) as display:
        display.show(frame("0"))
        await wait_until(device.writing.is_set)  # frame 0 is being written now
        for i in range(1, 10):
            display.show(frame(str(i)))
        await display.flush()
    assert len(device.frames) == 2
    assert same(device.frames[0], frame("0"))
    assert same(device.frames[-1], frame("9"))
    assert display.frames_written == 2
    assert display.frames_dropped == 8


async def test_writes_never_block_the_loop():
    device = SlowDummy(0.1)
    loop = asyncio.get_running_loop()
    async with Display(device) as display:
        start = loop.time()
        display.show(frame("1"))
        # The loop keeps ticking while the (blocking) write runs in a thread.
        await asyncio.sleep(0.02)
        assert loop.time() - start < scaled(0.08)
        await display.flush()
    assert threading.get_ident() not in device.threads


async def test_frame_rate_is_limited():
    device = SlowDummy(0.0)
    loop = asyncio.get_running_loop()
    async with Display(device, max_fps=20) as display:
        start = loop.time()
        for i in range(4):
            display.show(frame(str(i)))
            await asyncio.sleep(0.001)  # the next frame comes a moment later
            await display.flush()
        elapsed = loop.time() - start
    # Four frames at 20 fps need at least three 50 ms gaps.
    assert elapsed >= 0.15 - 0.01
    assert len(device.frames) == 4


async def test_write_errors_are_counted_and_the_writer_survives():
    class Flaky(SlowDummy):
        def display(self, image):
            if not self.frames and not getattr(self, "failed", False):
                self.failed = True
                raise OSError(121, "Remote I/O error")
            super().display(image)

    device = Flaky(0.0)
    async with Display(device, max_fps=100) as display:
        display.show(frame("1"))
        await display.flush()
        display.show(frame("2"))
        await display.flush()
    assert display.write_errors == 1
    assert display.frames_written == 1
    assert same(device.frames[-1], frame("2"))


async def test_rgb_frames_are_converted_and_sizes_checked():
    device = create_device(DisplaySpec(driver="dummy"))
    async with Display(device) as display:
        display.show(frame("5").convert("RGB"))
        await display.flush()
        assert device.image.mode == "1"
        with pytest.raises(ValueError, match="display is"):
            display.show(Image.new("1", (64, 32)))


def test_rotation_and_unknown_driver():
    device = create_device(DisplaySpec(driver="dummy", width=128, height=64, rotate=1))
    assert device.size == (64, 128)
    with pytest.raises(ConfigError):
        create_device(DisplaySpec(driver="st7735"))


def test_bad_frame_rate():
    with pytest.raises(ValueError, match="max_fps"):
        Display(create_device(DisplaySpec(driver="dummy")), max_fps=0)


def test_missing_i2c_bus_is_a_hardware_error():
    from appliance.errors import HardwareError

    with pytest.raises(HardwareError, match="I2C bus 19"):
        create_device(DisplaySpec(driver="ssd1306", i2c_port=19))
