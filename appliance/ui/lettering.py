"""The OLED's lettering: one font, one grid, shared by every screen.

Both the panel's screens (:mod:`appliance.ui.screens`) and the screens shown
outside the panel (:mod:`appliance.ui.notices`) draw text on the same 128x64
1-bit canvas in PIL's built-in *bitmap* font (6x11 px cells, 21 characters a
line): the bitmap variant draws the same pixels with every FreeType version,
so golden images stay valid on the Pi and in CI. Large text is that font
scaled 2x with nearest-neighbour, so it stays crisp. Pure: no device access.
"""

from __future__ import annotations

from functools import cache

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BIG_COLS",
    "CHAR_W",
    "COLS",
    "HEIGHT",
    "LINE_H",
    "WIDTH",
    "Draw",
    "big",
    "center",
    "fit",
    "font",
    "heading",
    "text",
    "wrap",
]

WIDTH = 128
HEIGHT = 64
CHAR_W = 6
LINE_H = 11
#: Characters a line holds, in the normal and in the 2x font.
COLS = WIDTH // CHAR_W
BIG_COLS = WIDTH // (2 * CHAR_W)

Draw = ImageDraw.ImageDraw


@cache
def font() -> ImageFont.ImageFont:
    """The bitmap font (``load_default()`` is FreeType on Pillow >= 10.1)."""
    return ImageFont.load_default_imagefont()


def fit(line: str, columns: int = COLS) -> str:
    """Shorten ``line`` to ``columns`` characters, marking the cut with '..'."""
    if len(line) <= columns:
        return line
    return line[: max(columns - 2, 0)] + ".."


def wrap(words: str, columns: int = COLS) -> list[str]:
    """Break ``words`` into lines of ``columns``; a longer word is cut."""
    lines: list[str] = []
    line = ""
    for word in words.split():
        candidate = f"{line} {word}".strip()
        if len(candidate) <= columns:
            line = candidate
        else:
            if line:
                lines.append(line)
            line = fit(word, columns)
    if line:
        lines.append(line)
    return lines


def text(draw: Draw, x: int, y: int, line: str, *, fill: int = 1) -> None:
    """Draw ``line`` with its top-left corner at (x, y)."""
    draw.text((x, y), line, font=font(), fill=fill)


def center(draw: Draw, y: int, line: str) -> None:
    """Draw ``line`` centred, cut to one line."""
    line = fit(line)
    text(draw, (WIDTH - len(line) * CHAR_W) // 2, y, line)


def heading(draw: Draw, y: int, line: str) -> None:
    """An inverted full-width label line."""
    draw.rectangle((0, y, WIDTH - 1, y + LINE_H - 2), fill=1)
    line = fit(line)
    text(draw, (WIDTH - len(line) * CHAR_W) // 2, y - 1, line, fill=0)


def big(image: Image.Image, y: int, line: str, *, x: int | None = None) -> None:
    """Draw ``line`` at twice the font size, centred unless ``x`` is given."""
    line = fit(line, BIG_COLS)
    if not line:
        return
    small = Image.new("1", (len(line) * CHAR_W, LINE_H), 0)
    ImageDraw.Draw(small).text((0, 0), line, font=font(), fill=1)
    scaled = small.resize((small.width * 2, small.height * 2), Image.Resampling.NEAREST)
    left = (WIDTH - scaled.width) // 2 if x is None else x
    image.paste(1, (left, y), scaled)
