"""OLED screens: :class:`~appliance.ui.panel.PanelView` to a 128x64 1-bit image.

Pure: no device access and no clock (timers use ``view.now``). The image is
mode ``"1"`` at 128x64, what luma's SSD1306/SH1106 drivers take directly.

Text is drawn with :mod:`appliance.ui.lettering` (one bitmap font and grid
for every screen, so golden images in ``tests/reference`` hold everywhere).

Layout: a status bar (identity, registration dot, network bars) on rows 0-9,
a rule on row 10, and the screen body below it. After a Vol+/Vol- press a
volume box covers the bottom of the body for two seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import segno
from PIL import Image, ImageDraw

from appliance.ui import lettering as lt
from appliance.ui.lettering import HEIGHT, WIDTH
from appliance.ui.view import PanelView, Screen
from appliance.ui.volume import VOLUME_MAX_LEVEL

__all__ = ["HEIGHT", "WIDTH", "format_duration", "render"]

_BAR_H = 10
_BODY_Y = _BAR_H + 2


def format_duration(seconds: float) -> str:
    """Format a call duration as ``mm:ss`` (``h:mm:ss`` from one hour)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def _display_name(remote: str) -> str:
    # Twilio addresses clients as "client:NAME"; people just want NAME.
    return remote.removeprefix("client:")


def _status_bar(draw: lt.Draw, view: PanelView) -> None:
    identity = view.identity or "not registered"
    lt.text(draw, 0, -1, lt.fit(identity, lt.COLS - (6 if view.ringer_off else 4)))
    if view.ringer_off:
        _ringer_off_icon(draw, WIDTH - 32, 0)
    # Registration: a filled dot when registered, a ring when not.
    cx, cy = WIDTH - 4, 4
    draw.ellipse(
        (cx - 3, cy - 3, cx + 3, cy + 3), outline=1, fill=1 if view.registered else 0
    )
    # Network: three bars when up, a cross when down, nothing when unknown;
    # with a measured quality (network_bars), that many filled, the rest hollow.
    if view.network_bars is not None and view.network_up is not False:
        for i, h in enumerate((3, 5, 8)):
            x = WIDTH - 21 + i * 4
            draw.rectangle(
                (x, 8 - h, x + 2, 8), outline=1, fill=int(i < view.network_bars)
            )
    elif view.network_up is True:
        for i, h in enumerate((3, 5, 8)):
            x = WIDTH - 21 + i * 4
            draw.rectangle((x, 8 - h, x + 2, 8), fill=1)
    elif view.network_up is False:
        draw.line((WIDTH - 21, 1, WIDTH - 13, 8), fill=1)
        draw.line((WIDTH - 21, 8, WIDTH - 13, 1), fill=1)
    draw.line((0, _BAR_H, WIDTH - 1, _BAR_H), fill=1)


def _ringer_off_icon(draw: lt.Draw, x: int, y: int) -> None:
    """A 9x9 bell with a slash through it: the ringer is turned off."""
    draw.arc((x + 1, y, x + 7, y + 8), start=180, end=0, fill=1)
    draw.line((x + 1, y + 4, x + 1, y + 6), fill=1)
    draw.line((x + 7, y + 4, x + 7, y + 6), fill=1)
    draw.line((x, y + 7, x + 8, y + 7), fill=1)
    draw.point((x + 4, y + 8), fill=1)
    draw.line((x, y + 8, x + 8, y), fill=1)


def _mute_icon(draw: lt.Draw, x: int, y: int) -> None:
    """A 9x11 microphone with a slash through it."""
    draw.rounded_rectangle((x + 3, y, x + 6, y + 6), radius=1, outline=1)
    draw.arc((x + 1, y + 2, x + 8, y + 8), start=0, end=180, fill=1)
    draw.line((x + 4, y + 8, x + 4, y + 10), fill=1)
    draw.line((x + 2, y + 10, x + 7, y + 10), fill=1)
    draw.line((x, y + 10, x + 9, y), fill=1)


def _idle(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    if not view.clock_time:  # a panel that is not told the time
        lt.big(image, 16, "Ready")
        lt.center(draw, 41, "Dial, then # or")
        lt.center(draw, 51, "Accept to call")
        return
    lt.big(image, 14, view.clock_time)
    lt.center(draw, 37, view.clock_date)
    notes = []
    if view.dnd:
        notes.append("DND")
    if view.missed_calls:
        notes.append(f"{view.missed_calls} missed")
    lt.center(draw, 51, "  ".join(notes) or "Ready")
    if view.dnd:
        _inverse_box(draw, 51, notes[0], len("  ".join(notes)))


def _inverse_box(draw: lt.Draw, y: int, text: str, line_len: int) -> None:
    """Draw ``text`` (the start of a centred line of ``line_len``) lit-inverted."""
    x = (WIDTH - line_len * lt.CHAR_W) // 2
    draw.rectangle((x - 1, y, x + len(text) * lt.CHAR_W, y + lt.LINE_H - 2), fill=1)
    lt.text(draw, x, y - 1, text, fill=0)


def _call_log(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    """Three entries around the selection; the selected one inverted."""
    items = view.log_items
    count = len(items)
    lt.text(draw, 0, _BODY_Y - 1, f"Calls {view.log_selected + 1}/{count}")
    lt.text(draw, WIDTH - 7 * lt.CHAR_W, _BODY_Y - 1, "Accept")
    first = min(max(view.log_selected - 1, 0), max(count - 3, 0))
    for row, index in enumerate(range(first, min(first + 3, count))):
        item = items[index]
        mark = {"in": "<", "out": ">"}.get(item.kind, "!" if item.unseen else "x")
        line = f"{mark}{item.when:>6} {_display_name(item.remote)}"
        y = _BODY_Y + 12 + row * lt.LINE_H
        if index == view.log_selected:
            draw.rectangle((0, y, WIDTH - 1, y + lt.LINE_H - 1), fill=1)
            lt.text(draw, 1, y - 1, lt.fit(line, lt.COLS), fill=0)
        else:
            lt.text(draw, 1, y - 1, lt.fit(line, lt.COLS))


def _dialing(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.text(draw, 0, _BODY_Y - 1, "Dial:")
    digits = view.dial_string
    if len(digits) <= lt.BIG_COLS:
        lt.big(image, 22, digits)
    else:
        # Too long for big digits: show the tail in the small font.
        tail = digits if len(digits) <= lt.COLS else "<" + digits[-(lt.COLS - 1) :]
        lt.center(draw, 28, tail)
    if view.dial_match:
        lt.center(draw, 44, lt.fit(f"-> {view.dial_match}", lt.COLS))
    lt.text(draw, 0, 53, "#:call")
    lt.text(draw, WIDTH - 10 * lt.CHAR_W, 53, "Hangup:del")


def _ringing(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.heading(draw, _BODY_Y, "Incoming call")
    name = _display_name(view.remote) or "Unknown"
    if len(name) <= lt.BIG_COLS:
        lt.big(image, 23, name)
        y = 45
    else:
        lt.center(draw, 25, name)
        y = 36
    for key, value in view.params:
        if y > HEIGHT - lt.LINE_H + 1:
            break
        lt.text(draw, 0, y, lt.fit(f"{key}: {value}", lt.COLS))
        y += 9


def _calling(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.center(draw, _BODY_Y, "Ringing..." if view.remote_ringing else "Calling...")
    name = _display_name(view.remote)
    if len(name) <= lt.BIG_COLS:
        lt.big(image, 26, name)
    else:
        lt.center(draw, 32, name)
    lt.center(draw, 53, "Hangup to cancel")


def _in_call(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.center(draw, _BODY_Y, _display_name(view.remote))
    started = view.call_started_at
    elapsed = 0.0 if started is None else view.now - started
    lt.big(image, 25, format_duration(elapsed))
    if view.muted:
        _mute_icon(draw, 0, 52)
    if not view.registered:
        # Signaling is down; the call holds while the phone reconnects.
        lt.center(draw, 52, "Reconnecting...")
    elif view.muted:
        lt.text(draw, 12, 52, "MUTED")


def _error(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.heading(draw, _BODY_Y, "Error")
    if view.error_code is not None:
        lt.big(image, 22, str(view.error_code))
    words = view.error_message.split()
    lines: list[str] = []
    line = ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if len(candidate) <= lt.COLS:
            line = candidate
        else:
            lines.append(line)
            line = lt.fit(word, lt.COLS)
    lines.append(line)
    for i, text in enumerate(lines[:2]):
        if i == 1 and len(lines) > 2:
            text = lt.fit(text + " " + lines[2], lt.COLS)
        lt.center(draw, 43 + i * 10, text)


def _offline(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    if not view.setup_requested:
        lt.big(image, 16, "Offline")
        lt.center(draw, 44, "Press READY to start")
        return
    lt.big(image, 16, "Offline")
    lt.center(draw, 40, "Reconnecting...")
    if view.next_retry_at is not None:
        wait = math.ceil(view.next_retry_at - view.now)
        lt.center(draw, 51, f"next try in {wait} s" if wait > 0 else "trying now")


def _connecting(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.big(image, 20, "Wait")
    lt.center(draw, 46, "Connecting...")


def _qr_matrix(data: str) -> tuple[tuple[int, ...], ...]:
    """The QR code of ``data`` (segno, error correction L), 1 = dark module."""
    return _qr_cached(data)


@cache
def _qr_cached(data: str) -> tuple[tuple[int, ...], ...]:
    # Level L keeps the symbol small enough for 2 px modules on 64 rows up to
    # version 3 (53 bytes, ISO/IEC 18004 table 7): a verification URI of a
    # short host fits. boost_error is off so the version does not grow.
    code = segno.make(data, error="l", micro=False, boost_error=False)
    return tuple(tuple(row) for row in code.matrix_iter(scale=1, border=0))


def _draw_qr(image: Image.Image, data: str) -> int:
    """Draw the QR code of ``data`` at the left, full height; return its width.

    Dark modules are unlit pixels on a lit square: scanners expect dark on
    light, and the lit margin is the quiet zone (as wide as fits, at least one
    module; ISO/IEC 18004 asks for four, which decoders rarely need).
    """
    matrix = _qr_matrix(data)
    size = len(matrix)
    scale = max(1, (HEIGHT - 2) // size)
    side = size * scale
    margin = max(scale, (HEIGHT - side) // 2)
    box = side + 2 * margin
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, box - 1, min(box, HEIGHT) - 1), fill=1)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                left, top = margin + x * scale, margin + y * scale
                draw.rectangle((left, top, left + scale - 1, top + scale - 1), fill=0)
    return box


def _provisioning(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    if view.provisioning_uri:
        # Full height for the code: the status bar has nothing to say yet.
        draw.rectangle((0, 0, WIDTH - 1, HEIGHT - 1), fill=0)
        left = _draw_qr(image, view.provisioning_uri) + 3
        columns = (WIDTH - left) // lt.CHAR_W
        for i, text in enumerate(("Scan to", "set up, or", "enter code")):
            lt.text(draw, left, i * 10, lt.fit(text, columns))
        lt.text(draw, left, 36, lt.fit(view.provisioning_code, columns))
        if view.provisioning_message:
            lt.text(draw, left, 52, lt.fit(view.provisioning_message, columns))
        return
    lt.heading(draw, _BODY_Y, "Provisioning")
    lines = lt.wrap(view.provisioning_message or "Waiting for provisioning", lt.COLS)
    for i, text in enumerate(lines[:3]):
        lt.center(draw, 26 + i * 11, text)
    if view.provisioning_code and len(lines) < 3:
        lt.center(draw, 26 + len(lines) * 11, view.provisioning_code)


def _confirm_reset(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    lt.heading(draw, _BODY_Y, "Reset provisioning?")
    lt.center(draw, 26, "Forgets this phone's")
    lt.center(draw, 36, "identity.")
    if view.reset_hold_until is None:
        lt.center(draw, 48, "Hold HANGUP 3 s")
    else:
        left = max(0, math.ceil(view.reset_hold_until - view.now))
        lt.center(draw, 48, f"Keep holding... {left}")


def _updating(image: Image.Image, draw: lt.Draw, view: PanelView) -> None:
    """A remote update: what it does, the version, a bar while downloading,
    and why an update was rolled back."""
    status = view.update_status or "Updating"
    heading = f"{status} {view.update_version}".strip()
    lt.heading(draw, _BODY_Y, lt.fit(heading, lt.COLS))
    if view.update_progress is not None:
        progress = min(max(view.update_progress, 0.0), 1.0)
        draw.rectangle((4, 30, WIDTH - 5, 38), outline=1)
        inner = int((WIDTH - 12) * progress)
        if inner:
            draw.rectangle((6, 32, 6 + inner - 1, 36), fill=1)
        lt.center(draw, 44, f"{round(progress * 100)}%")
        return
    lines = lt.wrap(view.update_reason, lt.COLS) if view.update_reason else []
    if not lines:
        lines = ["Do not unplug"] if status != "Rolled back" else []
    for i, text in enumerate(lines[:3]):
        lt.center(draw, 28 + i * lt.LINE_H, text)


def _volume_box(draw: lt.Draw, view: PanelView) -> None:
    """Which volume, and its level as rising bars (the rest as outlines)."""
    top = 40
    draw.rectangle((0, top, WIDTH - 1, HEIGHT - 1), outline=1, fill=0)
    ringer = view.volume_role == "ringtone"
    if ringer and view.volume_level == 0:
        label = "Ringer off"
    else:
        label = "Ringer volume" if ringer else "Call volume"
    lt.text(draw, 4, top, label)
    gap = 2
    width = (WIDTH - 8 - gap * (VOLUME_MAX_LEVEL - 1)) // VOLUME_MAX_LEVEL
    bottom = HEIGHT - 3
    for i in range(VOLUME_MAX_LEVEL):
        x = 4 + i * (width + gap)
        box = (x, bottom - 2 - i, x + width - 1, bottom)
        if i < view.volume_level:
            draw.rectangle(box, fill=1)
        else:
            draw.rectangle(box, outline=1)


def _usb_box(draw: lt.Draw, view: PanelView) -> None:
    """What reading a USB stick did: a box over the lower half of any screen."""
    top = 32
    draw.rectangle((0, top, WIDTH - 1, HEIGHT - 1), outline=1, fill=0)
    heading = "USB" if view.usb_code is None else f"USB error {view.usb_code}"
    lt.center(draw, top + 2, heading)
    for i, line in enumerate(lt.wrap(view.usb_message, lt.COLS - 1)[:2]):
        lt.center(draw, top + 12 + i * 9, line)


_Renderer = Callable[[Image.Image, lt.Draw, PanelView], None]

_SCREENS: dict[Screen, _Renderer] = {
    Screen.IDLE: _idle,
    Screen.DIALING: _dialing,
    Screen.RINGING: _ringing,
    Screen.CALLING: _calling,
    Screen.IN_CALL: _in_call,
    Screen.ERROR: _error,
    Screen.OFFLINE: _offline,
    Screen.CONNECTING: _connecting,
    Screen.PROVISIONING: _provisioning,
    Screen.CONFIRM_RESET: _confirm_reset,
    Screen.UPDATING: _updating,
    Screen.CALL_LOG: _call_log,
}


def render(view: PanelView) -> Image.Image:
    """Draw ``view`` as a new 128x64 mode ``"1"`` image (white = lit pixel)."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    _status_bar(draw, view)
    _SCREENS[view.screen](image, draw, view)
    if view.volume_role:
        _volume_box(draw, view)
    if view.usb_message:
        _usb_box(draw, view)
    return image
