"""Which panel gesture a front-panel hardware event is: pure, no I/O.

The hardware reports what happened to a switch (pressed, held, released,
the hook lifted); the panel thinks in gestures (a key, Accept, Hangup held).
The mapping is a fixed rule of the product, testable without a loop, so it
lives here rather than inside the controller's event pump.
"""

from __future__ import annotations

from appliance.hardware.ports import (
    ButtonHeld,
    ButtonPressed,
    ButtonReleased,
    HookLifted,
    HookReplaced,
    KeyHeld,
    KeyPressed,
    PanelEvent,
)
from appliance.ui.panel import DTMF_KEYS
from appliance.ui.view import PanelButton

__all__ = ["gesture_for"]


def gesture_for(event: PanelEvent) -> str | PanelButton | None:
    """Return the keypad key (a str) or the button gesture ``event`` makes.

    ``None`` for events that carry no gesture: releases and holds of other
    keys, and buttons the panel has no use for.
    """
    if isinstance(event, KeyPressed):
        return event.key if event.key in DTMF_KEYS else None
    if isinstance(event, ButtonPressed):
        try:
            return PanelButton(event.button)
        except ValueError:
            return None
    if isinstance(event, KeyHeld):
        return PanelButton.DND if event.key == "#" else None
    if isinstance(event, ButtonHeld):
        return PanelButton.HANGUP_HELD if event.button == "hangup" else None
    if isinstance(event, ButtonReleased):
        return PanelButton.HANGUP_RELEASED if event.button == "hangup" else None
    if isinstance(event, HookLifted):
        return PanelButton.HOOK_UP
    if isinstance(event, HookReplaced):
        return PanelButton.HOOK_DOWN
    return None
