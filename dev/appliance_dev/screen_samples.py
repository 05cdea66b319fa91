"""Every screen with sample data: the README's pictures and ``--export-screens``.

The sample views exercise each screen the renderer draws (and the notices
outside the panel), so that a change to a screen can be looked at without
driving a phone into that state. They are data, not simulation, so they live
apart from :mod:`appliance_dev.sim`, which only offers them on its command
line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PIL import Image

from appliance.ui.calllog_view import LogItem
from appliance.ui.notices import (
    render_check_step,
    render_check_summary,
    render_config_error,
    render_test_pattern,
)
from appliance.ui.screens import HEIGHT, WIDTH, render
from appliance.ui.view import PanelView, Screen

__all__ = ["export_screens", "notice_samples", "sample_views"]


def sample_views(now: float = 1000.0) -> dict[str, PanelView]:
    """Every screen with representative data (README pictures, ``--export-screens``)."""
    bar = PanelView(
        Screen.IDLE, now=now, identity="desk", registered=True, network_up=True
    )
    return {
        "offline": PanelView(Screen.OFFLINE, now=now, network_up=False),
        "offline_retry": PanelView(
            Screen.OFFLINE,
            now=now,
            network_up=False,
            setup_requested=True,
            next_retry_at=now + 7.2,
        ),
        "connecting": PanelView(Screen.CONNECTING, now=now, setup_requested=True),
        "idle": replace(
            bar,
            screen=Screen.IDLE,
            clock_time="09:45",
            clock_date="Thu 03 Dec 2026",
            network_bars=3,
        ),
        "idle_missed": replace(
            bar,
            screen=Screen.IDLE,
            clock_time="09:45",
            clock_date="Thu 03 Dec 2026",
            missed_calls=2,
            network_bars=2,
        ),
        "idle_dnd_clock_unknown": replace(
            bar,
            screen=Screen.IDLE,
            clock_time="--:--",
            clock_date="clock not set",
            dnd=True,
        ),
        "call_log": replace(
            bar,
            screen=Screen.CALL_LOG,
            log_items=(
                LogItem("client:bob", "missed", "09:41", unseen=True),
                LogItem("+15551234", "in", "09:02", 75.0),
                LogItem("client:carol", "out", "02 Dec", 300.0),
            ),
            log_selected=1,
        ),
        "dialing": replace(
            bar,
            screen=Screen.DIALING,
            dial_string="200",
            dial_match="bob",
        ),
        "calling": replace(
            bar,
            screen=Screen.CALLING,
            remote="client:bob",
            remote_ringing=True,
        ),
        "ringing": replace(
            bar,
            screen=Screen.RINGING,
            remote="client:alice",
            params=(("Floor", "3"), ("Topic", "invoices")),
        ),
        "in_call": replace(
            bar,
            screen=Screen.IN_CALL,
            remote="client:bob",
            call_started_at=now - 83.0,
        ),
        "in_call_muted": replace(
            bar,
            screen=Screen.IN_CALL,
            remote="client:bob",
            call_started_at=now - 83.0,
            muted=True,
        ),
        "in_call_volume": replace(
            bar,
            screen=Screen.IN_CALL,
            remote="client:bob",
            call_started_at=now - 83.0,
            volume_role="speaker",
            volume_level=7,
        ),
        "error": replace(
            bar,
            screen=Screen.ERROR,
            error_code=31486,
            error_message="Busy here",
        ),
        "provisioning": replace(
            bar,
            screen=Screen.PROVISIONING,
            provisioning_code="BCDF-GHJK",
            provisioning_uri="https://phones.example.com/device?user_code=BCDF-GHJK",
        ),
        "provisioning_revoked": replace(
            bar,
            screen=Screen.PROVISIONING,
            identity="",
            registered=False,
            provisioning_message="Phone revoked by the administrator",
        ),
        "provisioning_expired": replace(
            bar,
            screen=Screen.PROVISIONING,
            provisioning_message="offline: token expired",
        ),
        "confirm_reset": replace(bar, screen=Screen.CONFIRM_RESET),
        "updating": replace(
            bar,
            screen=Screen.UPDATING,
            update_status="Downloading",
            update_progress=0.42,
            update_version="1.3.0",
        ),
        "update_installing": replace(
            bar,
            screen=Screen.UPDATING,
            update_status="Installing",
            update_version="1.3.0",
        ),
        "update_restarting": replace(
            bar,
            screen=Screen.UPDATING,
            update_status="Restarting",
            update_version="1.3.0",
        ),
        "update_rolled_back": replace(
            bar,
            screen=Screen.UPDATING,
            update_status="Rolled back",
            update_reason="cannot open audio: no sound card",
        ),
    }


def notice_samples() -> dict[str, Image.Image]:
    """The screens outside the panel (``ui/notices.py``) with sample data."""
    return {
        "check_pattern": render_test_pattern(),
        "check_key": render_check_step(
            "Press key", "5", "within 10 s", index=11, total=26
        ),
        "check_summary": render_check_summary(23, 1, 2, "input alsa:B_mic"),
        "config_error": render_config_error(
            "device.codec_preferences",
            "unsupported codec(s): g729; use opus and/or pcmu",
        ),
    }


def export_screens(directory: Path, *, scale: int = 4) -> list[Path]:
    """Render :func:`sample_views` to ``screen_NAME.png`` in ``directory``.

    Each picture is scaled ``scale`` times (nearest neighbour) and drawn as
    light pixels on a dark blue-black ground, like the OLED.

    Returns:
        The files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    images = {name: render(view) for name, view in sample_views().items()}
    for name, image in {**images, **notice_samples()}.items():
        big = image.resize((WIDTH * scale, HEIGHT * scale), Image.Resampling.NEAREST)
        colour = Image.new("RGB", big.size, (8, 12, 24))
        colour.paste((170, 220, 255), (0, 0), big)
        path = directory / f"screen_{name}.png"
        colour.save(path)
        written.append(path)
    return written
