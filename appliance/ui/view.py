"""What the front panel shows and hears, as plain values.

:class:`PanelView` is the panel's one output to the screens (the renderer, the
display adapter and the simulator read it); the enums are the vocabulary the
panel, its controller and the screens share. They live apart from the state
machine in :mod:`appliance.ui.panel` so that the screens depend on what they
draw, not on how the panel decides it. :func:`refresh_at` says when a view goes
stale by itself (a running call timer, a countdown), for the adapter's timer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from appliance.ui.calllog_view import LogItem

__all__ = [
    "PanelButton",
    "PanelState",
    "PanelView",
    "Screen",
    "StatusLed",
    "refresh_at",
]


class PanelState(StrEnum):
    """Where the panel is."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    IDLE = "idle"
    DIALING = "dialing"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"
    ERROR = "error"
    PROVISIONING = "provisioning"
    CONFIRM_RESET = "confirm_reset"
    CALL_LOG = "call_log"


class Screen(StrEnum):
    """Which screen to draw (``updating`` shows over offline and idle only)."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    IDLE = "idle"
    DIALING = "dialing"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"
    ERROR = "error"
    PROVISIONING = "provisioning"
    CONFIRM_RESET = "confirm_reset"
    CALL_LOG = "call_log"
    UPDATING = "updating"


class PanelButton(StrEnum):
    """Button gestures. ``hangup_held`` is a long press; hook is the switch."""

    READY = "ready"
    ACCEPT = "accept"
    HANGUP = "hangup"
    HANGUP_HELD = "hangup_held"
    HANGUP_RELEASED = "hangup_released"
    MUTE = "mute"
    VOL_UP = "vol_up"
    VOL_DOWN = "vol_down"
    HOOK_UP = "hook_up"
    HOOK_DOWN = "hook_down"
    #: Do-not-disturb on/off (holding # on the keypad).
    DND = "dnd"


class StatusLed(StrEnum):
    """Status LED modes (see :data:`appliance.cadence.STATUS_SLOW` and friends)."""

    OFF = "off"
    STEADY = "steady"
    SLOW = "slow"
    FAST = "fast"


@dataclass(frozen=True)
class PanelView:
    """Everything the screens need, as plain values.

    Attributes:
        screen: which screen to draw.
        now: the time of the latest input; timers are ``now - call_started_at``.
        identity: our client identity once registered.
        registered: registration state for the status bar.
        network_up: ``None`` when unknown.
        dial_string: what has been typed.
        dial_match: the directory name the dial string matches, if any.
        remote: the other party (caller id or dialled target, as received).
        remote_ringing: the far end is ringing (outgoing calls).
        params: custom parameters of an incoming call.
        call_started_at: when the call was answered.
        muted: microphone muted.
        error_code / error_message: the error being shown.
        next_retry_at: when the engine retries registration, if known.
        setup_requested: whether Ready has been pressed at least once.
        ringer_off: the ringer volume is at 0 (status bar icon).
        volume_role: the role whose volume bar is shown ("" = none).
        volume_level: that role's level, 0..VOLUME_MAX_LEVEL.
        provisioning_code: the user code to type at the verification URI.
        provisioning_uri: what the QR code holds (verification_uri_complete);
            empty = no code to show, only ``provisioning_message``.
        provisioning_message: what provisioning is doing or why it stopped.
        reset_hold_until: on the reset confirmation, when the Hangup being
            held confirms it (None = not held).
        update_status: what a remote update is doing ("" = nothing to show):
            ``Downloading``, ``Installing``, ``Restarting``, ``Rolled back``...
        update_version: the release it concerns.
        update_progress: the download's fraction done, or None.
        update_reason: why it was rolled back.
        usb_message / usb_code: what reading a USB stick did, shown in a box
            over any screen for a few seconds ("" = nothing); the code of a
            refusal, None for a success.
        missed_calls: missed calls not seen yet (idle screen, status LED).
        dnd: do-not-disturb is on.
        clock_time / clock_date: the idle screen's clock, as text.
        network_bars: 0-3 from the last call's quality, None = unknown.
        log_items / log_selected: the call log, newest first, and the entry
            Accept calls back.
    """

    screen: Screen
    now: float = 0.0
    identity: str = ""
    registered: bool = False
    network_up: bool | None = None
    dial_string: str = ""
    dial_match: str = ""
    remote: str = ""
    remote_ringing: bool = False
    params: tuple[tuple[str, str], ...] = ()
    call_started_at: float | None = None
    muted: bool = False
    error_code: int | None = None
    error_message: str = ""
    next_retry_at: float | None = None
    setup_requested: bool = False
    ringer_off: bool = False
    volume_role: str = ""
    volume_level: int = 0
    provisioning_code: str = ""
    provisioning_uri: str = ""
    provisioning_message: str = ""
    reset_hold_until: float | None = None
    update_status: str = ""
    update_version: str = ""
    update_progress: float | None = None
    update_reason: str = ""
    usb_message: str = ""
    usb_code: int | None = None
    missed_calls: int = 0
    dnd: bool = False
    clock_time: str = ""
    clock_date: str = ""
    network_bars: int | None = None
    log_items: tuple[LogItem, ...] = ()
    log_selected: int = 0


def refresh_at(view: PanelView, now: float) -> float | None:
    """When ``view``'s screen changes by itself (call timer, countdowns)."""
    if view.screen is Screen.IN_CALL and view.call_started_at is not None:
        elapsed = now - view.call_started_at
        return view.call_started_at + math.floor(elapsed) + 1.0
    if view.screen is Screen.OFFLINE and view.next_retry_at is not None:
        return now + 1.0
    if view.screen is Screen.CONFIRM_RESET and view.reset_hold_until is not None:
        return now + 1.0  # the countdown
    return None
