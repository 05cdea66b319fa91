"""Every OLED screen rendered from a fixed PanelView, compared with golden PNGs.

Regenerate the references (after checking the new images by eye) with
``APPLIANCE_UPDATE_GOLDEN=1 pytest tests/ui/test_screens.py``.
"""

import os
from pathlib import Path
from typing import Any

import pytest
from luma.core.device import dummy
from PIL import Image, ImageChops

from appliance.ui.calllog_view import LogItem
from appliance.ui.panel import Panel
from appliance.ui.screens import HEIGHT, WIDTH, format_duration, render
from appliance.ui.view import PanelView, Screen

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
UPDATE = os.environ.get("APPLIANCE_UPDATE_GOLDEN") == "1"

_BASE: dict[str, Any] = {
    "now": 100.0,
    "identity": "alice",
    "registered": True,
    "network_up": True,
}

_LOG = (
    LogItem("client:bob", "missed", "09:41", unseen=True),
    LogItem("+15551234", "in", "09:02", 75.0),
    LogItem("client:carol", "out", "02 Dec", 300.0),
    LogItem("client:dave", "missed", "--"),
)

VIEWS = {
    "idle": PanelView(Screen.IDLE, **_BASE),
    "idle_clock": PanelView(
        Screen.IDLE,
        clock_time="09:45",
        clock_date="Thu 03 Dec 2026",
        missed_calls=2,
        network_bars=2,
        **_BASE,
    ),
    "idle_clock_unknown_dnd": PanelView(
        Screen.IDLE,
        clock_time="--:--",
        clock_date="clock not set",
        dnd=True,
        missed_calls=1,
        **_BASE,
    ),
    "call_log": PanelView(Screen.CALL_LOG, log_items=_LOG, log_selected=1, **_BASE),
    "dialing": PanelView(Screen.DIALING, dial_string="5551234", **_BASE),
    "dialing_directory": PanelView(
        Screen.DIALING, dial_string="100", dial_match="bob", **_BASE
    ),
    "dialing_long": PanelView(
        Screen.DIALING, dial_string="0044207946012345678", **_BASE
    ),
    "ringing": PanelView(
        Screen.RINGING,
        remote="client:bob",
        params=(("floor", "3"), ("topic", "support")),
        **_BASE,
    ),
    "ringing_number": PanelView(Screen.RINGING, remote="+14155550100", **_BASE),
    "calling": PanelView(Screen.CALLING, remote="client:bob", **_BASE),
    "calling_ringing": PanelView(
        Screen.CALLING, remote="+14155550100", remote_ringing=True, **_BASE
    ),
    "in_call": PanelView(
        Screen.IN_CALL, remote="client:bob", call_started_at=100.0 - 754.6, **_BASE
    ),
    "in_call_muted": PanelView(
        Screen.IN_CALL, remote="client:bob", call_started_at=95.0, muted=True, **_BASE
    ),
    "error": PanelView(
        Screen.ERROR,
        error_code=31486,
        error_message="Busy here, the callee is on another call",
        **_BASE,
    ),
    "offline_first_start": PanelView(Screen.OFFLINE, now=0.0),
    "offline_retry": PanelView(
        Screen.OFFLINE,
        now=100.0,
        identity="alice",
        network_up=False,
        next_retry_at=111.5,
        setup_requested=True,
    ),
    "volume_ringer": PanelView(
        Screen.IDLE, volume_role="ringtone", volume_level=3, **_BASE
    ),
    "volume_ringer_off": PanelView(
        Screen.RINGING,
        remote="client:bob",
        volume_role="ringtone",
        ringer_off=True,
        **_BASE,
    ),
    "idle_ringer_off": PanelView(
        Screen.IDLE, ringer_off=True, **{**_BASE, "identity": "reception-desk-2"}
    ),
    "volume_call": PanelView(
        Screen.IN_CALL,
        remote="client:bob",
        call_started_at=40.0,
        volume_role="speaker",
        volume_level=8,
        **_BASE,
    ),
    "connecting": PanelView(Screen.CONNECTING, now=1.0, setup_requested=True),
    "provisioning": PanelView(
        Screen.PROVISIONING,
        provisioning_code="BCDF-GHJK",
        provisioning_uri="https://phones.example.com/device?user_code=BCDF-GHJK",
    ),
    "provisioning_revoked": PanelView(
        Screen.PROVISIONING,
        provisioning_message="This phone was revoked by the administrator",
    ),
    "confirm_reset": PanelView(Screen.CONFIRM_RESET, **_BASE),
    "confirm_reset_holding": PanelView(
        Screen.CONFIRM_RESET, reset_hold_until=101.8, **_BASE
    ),
    "updating": PanelView(
        Screen.UPDATING,
        update_status="Downloading",
        update_progress=0.42,
        update_version="1.2.3",
        **_BASE,
    ),
    "update_installing": PanelView(
        Screen.UPDATING, update_status="Installing", update_version="1.2.3", **_BASE
    ),
    "update_rolled_back": PanelView(
        Screen.UPDATING,
        update_status="Rolled back",
        update_reason="not registered within the health check",
        **_BASE,
    ),
}


def test_every_screen_has_a_reference_view():
    assert {v.screen for v in VIEWS.values()} == set(Screen)


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_screen_matches_reference(name):
    # Through luma's dummy device, as the phone would show it.
    device = dummy(width=WIDTH, height=HEIGHT, mode="1")
    image = render(VIEWS[name])
    assert (image.mode, image.size) == ("1", (WIDTH, HEIGHT))
    device.display(image)
    shown = device.image
    path = REFERENCE / f"screen_{name}.png"
    if UPDATE:
        REFERENCE.mkdir(exist_ok=True)
        shown.save(path)
    assert path.exists(), f"missing {path}; run with APPLIANCE_UPDATE_GOLDEN=1"
    with Image.open(path) as ref:
        expected = ref.convert("1")
    # ImageChops on mode "1" images is unreliable; compare as 8-bit grey.
    diff = ImageChops.difference(shown.convert("L"), expected.convert("L"))
    assert diff.getbbox() is None


def test_screens_differ_with_state():
    muted = render(VIEWS["in_call_muted"])
    unmuted = render(PanelView(**{**VIEWS["in_call_muted"].__dict__, "muted": False}))
    assert ImageChops.difference(muted.convert("L"), unmuted.convert("L")).getbbox()


def test_offline_countdown_moves_with_time():
    view = VIEWS["offline_retry"]
    later = PanelView(**{**view.__dict__, "now": view.now + 5})
    before, after = render(view).convert("L"), render(later).convert("L")
    assert ImageChops.difference(before, after).getbbox() is not None


def test_render_of_a_live_panel():
    panel = Panel()
    panel.button("ready", 0.0)
    panel.registered("carol", 0.1)
    panel.incoming("client:dave", {"x": "1"}, 1.0)
    image = render(panel.view())
    assert image.getbbox() is not None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00"), (59.9, "00:59"), (754.6, "12:34"), (3725, "1:02:05"), (-3, "00:00")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
