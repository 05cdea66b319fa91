"""OLED screens shown outside the panel's state machine.

The panel's screens (:mod:`appliance.ui.screens`) follow a running phone.
These are for the moments when there is no phone to follow: the hardware
self-test (``appliance check``) asks for keys and draws a test pattern, and a
fatal configuration error tells the person at the desk why the phone will
not start, since the journal is out of their sight. Pure: plain arguments in,
a 128x64 mode ``"1"`` image out, in the same bitmap font as the panel.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from appliance.ui import lettering as lt
from appliance.ui.lettering import HEIGHT, WIDTH

__all__ = [
    "HEIGHT",
    "WIDTH",
    "render_check_step",
    "render_check_summary",
    "render_config_error",
    "render_test_pattern",
]


def render_test_pattern() -> Image.Image:
    """A frame that shows dead pixels, a shifted origin and a mirrored panel.

    A one-pixel border (every edge lit), a checkerboard block top left, the
    two diagonals, and the words ``TEST`` and ``top left ->`` so a rotated or
    mirrored module is obvious.
    """
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, WIDTH - 1, HEIGHT - 1), outline=1)
    draw.line((0, 0, WIDTH - 1, HEIGHT - 1), fill=1)
    draw.line((0, HEIGHT - 1, WIDTH - 1, 0), fill=1)
    for y in range(2, 18):
        for x in range(2, 18):
            if (x // 2 + y // 2) % 2 == 0:
                draw.point((x, y), fill=1)
    draw.rectangle((WIDTH - 18, HEIGHT - 18, WIDTH - 3, HEIGHT - 3), fill=1)
    draw.rectangle((38, 22, 89, 43), fill=0)
    lt.big(image, 22, "TEST")
    draw.text((20, 4), "<- top left", font=lt.font(), fill=1)
    return image


def render_check_step(
    title: str, big: str, hint: str, *, index: int, total: int
) -> Image.Image:
    """One step of the self-test: ``title`` and ``n/total``, a big word, a hint."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    lt.heading(draw, 0, f"{index + 1}/{total} {title}")
    lt.big(image, 18, big)
    for i, line in enumerate(lt.wrap(hint)[:2]):
        lt.center(draw, 42 + i * 10, line)
    return image


def render_check_summary(
    passed: int, failed: int, skipped: int, first_failure: str = ""
) -> Image.Image:
    """The self-test's verdict: counts, and the first part that failed."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    lt.heading(draw, 0, "Check done")
    lt.big(image, 14, "FAILED" if failed else "ALL OK")
    lt.center(draw, 38, f"ok {passed}  fail {failed}  skip {skipped}")
    if first_failure:
        lt.center(draw, 50, first_failure)
    return image


def render_config_error(key: str, reason: str, more: int = 0) -> Image.Image:
    """A fatal configuration error: the ``section.key`` at fault and why.

    The key gets two lines when it needs them (split after its section), the
    reason the lines left above the footer, which says the phone stopped.

    Args:
        key: the first problem's key (``device.edge``), or a file name.
        reason: what is wrong with it.
        more: how many further problems the journal lists.
    """
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    lt.heading(draw, 0, "Config error")
    key = key.rsplit("/", 1)[-1]
    section, dot, rest = key.partition(".")
    lines = [key] if len(key) <= lt.COLS or not dot else [section + dot, lt.fit(rest)]
    body = 4 - len(lines)
    reasons = lt.wrap(reason)
    if more:
        reasons = [*reasons[: body - 1], f"(+{more} more in the log)"]
    for i, line in enumerate(lines + reasons[:body]):
        lt.center(draw, 10 + i * 10, line)
    draw.line((0, 53, WIDTH - 1, 53), fill=1)
    lt.center(draw, 53, "Phone stopped")
    return image
