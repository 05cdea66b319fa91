"""The simulator's terminal: the OLED drawn in text, the LEDs and a log.

``appliance sim`` shows the phone in the terminal it runs in. Drawing a 1-bit
frame with Unicode blocks, keeping the screen, LEDs and log lines in place
(or printing them line by line when the output is not a terminal, for
scripts and tests), and putting a tty into cbreak mode are the simulator's
output side, kept apart from :mod:`appliance_dev.sim`, which wires the phone.
"""

from __future__ import annotations

import contextlib
import shutil
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from PIL import Image

from appliance.ui.screens import HEIGHT, WIDTH

__all__ = [
    "Terminal",
    "TerminalOled",
    "cbreak",
    "half_block_art",
    "quadrant_art",
    "terminal_art",
]


def half_block_art(image: Image.Image) -> list[str]:
    """Draw a 1-bit image with Unicode half blocks: two pixel rows per line."""
    image = image.convert("1")
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    lines = []
    for y in range(0, height, 2):
        chars = []
        for x in range(width):
            top = bool(pixels[x, y])
            bottom = y + 1 < height and bool(pixels[x, y + 1])
            chars.append(
                "\u2588"
                if top and bottom
                else "\u2580"
                if top
                else "\u2584"
                if bottom
                else " "
            )
        lines.append("".join(chars))
    return lines


# Quadrant blocks indexed by top-left=1, top-right=2, bottom-left=4, bottom-right=8.
_QUADRANTS = (
    " \u2598\u259d\u2580\u2596\u258c\u259e\u259b"
    "\u2597\u259a\u2590\u259c\u2584\u2599\u259f\u2588"
)


def quadrant_art(image: Image.Image) -> list[str]:
    """Draw a 1-bit image with Unicode quadrant blocks: 2x2 pixels per character.

    Half the width of :func:`half_block_art` (64 columns for the OLED), for
    terminals narrower than the 130 columns the full-width drawing needs.
    """
    image = image.convert("1")
    width, height = image.size
    pixels = image.load()
    assert pixels is not None

    def lit(x: int, y: int) -> int:
        return int(x < width and y < height and bool(pixels[x, y]))

    return [
        "".join(
            _QUADRANTS[
                lit(x, y)
                | lit(x + 1, y) << 1
                | lit(x, y + 1) << 2
                | lit(x + 1, y + 1) << 3
            ]
            for x in range(0, width, 2)
        )
        for y in range(0, height, 2)
    ]


def terminal_art(image: Image.Image, columns: int) -> list[str]:
    """The widest drawing of ``image`` that fits ``columns`` (with its frame)."""
    return half_block_art(image) if columns >= image.width + 2 else quadrant_art(image)


class Terminal:
    """Everything the simulator prints, from the loop or the display thread."""

    def __init__(self, out: TextIO, *, interactive: bool) -> None:
        self._out = out
        self._interactive = interactive
        self._lock = threading.Lock()
        self._art: list[str] = [" " * WIDTH] * (HEIGHT // 2)
        self._screen = ""
        self._leds = ""
        self._log: deque[str] = deque(maxlen=8)
        self._t0 = time.monotonic()

    def _write(self, text: str) -> None:
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def frame(self, image: Image.Image, screen: str) -> None:
        columns = shutil.get_terminal_size().columns if self._interactive else WIDTH + 2
        self._art = terminal_art(image, columns)
        self._screen = screen
        if self._interactive:
            self._redraw()
        else:
            body = "\n".join(f"|{line}|" for line in self._art)
            self._write(f"screen: {screen}\n{body}\n")

    def leds(self, ringer: bool, status: bool) -> None:
        self._leds = (
            f"ringer {'(*)' if ringer else '( )'}   status {'(*)' if status else '( )'}"
        )
        if self._interactive:
            self._redraw()
        else:
            on_off = {True: "on", False: "off"}
            self._write(f"leds: ringer={on_off[ringer]} status={on_off[status]}\n")

    def log(self, text: str) -> None:
        stamp = f"+{time.monotonic() - self._t0:7.3f}s"
        if self._interactive:
            self._log.append(f"{stamp} {text}")
            self._redraw()
        else:
            self._write(f"log: {stamp} {text}\n")

    def _redraw(self) -> None:
        border = "+" + "-" * len(self._art[0]) + "+"
        lines = [border, *(f"|{line}|" for line in self._art), border]
        lines.append(f" {self._leds}   [{self._screen}]")
        lines.append(
            " keys: 0-9*# keypad  Enter accept  Bksp/Esc hangup  H hold-hangup"
        )
        lines.append("       r ready  m mute/log  h hook  D dnd  i bob calls  q quit")
        lines += list(self._log)
        # Home the cursor and overwrite in place; \x1b[K clears each line's tail.
        text = "\x1b[H" + "".join(f"{line}\x1b[K\r\n" for line in lines) + "\x1b[J"
        self._write(text)


class TerminalOled:
    """A luma-compatible device that shows frames in the terminal.

    :class:`Display` calls :meth:`display` on a worker thread; PNG files are
    written there too, never on the loop.
    """

    mode = "1"

    def __init__(self, terminal: Terminal, frames: Path | None) -> None:
        self._terminal = terminal
        self._frames = frames
        self._count = 0
        self.screen = ""

    @property
    def size(self) -> tuple[int, int]:
        return (WIDTH, HEIGHT)

    def display(self, image: Image.Image) -> None:
        self._count += 1
        if self._frames is not None:
            image.save(self._frames / f"frame_{self._count:04d}_{self.screen}.png")
        self._terminal.frame(image, self.screen)


@contextlib.contextmanager
def cbreak(stream: TextIO) -> Iterator[None]:
    """Keys arrive one by one, unechoed, while the block runs (a tty only)."""
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
