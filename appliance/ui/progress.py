"""Which local call-progress tone the earpiece plays (pure).

A desk phone makes its own dial tone and ringback: Twilio's gateway has no dial
tone, and the callee sends no early media (its media starts when it answers),
so without these the user hears nothing while lifting the handset or while
the far end rings. The decision reads only the panel's view; the controller
plays the sound (appliance.audio.sounds.progress_sound, the country's tones
and cadence) and stops it when the answer changes.
"""

from __future__ import annotations

from appliance.ui.view import PanelView, Screen

__all__ = ["local_tone"]


def local_tone(view: PanelView) -> str | None:
    """``"dialtone"``, ``"ringback"`` or None for what the panel shows.

    Dial tone: the dialing screen with nothing typed, which only lifting the
    handset gives (a first key press starts dialing with that digit). Ringback:
    an outgoing call whose far end rings (the ``ringing`` event, so the Device
    needs ``enable_ringing_state``).
    """
    if view.screen is Screen.DIALING and not view.dial_string:
        return "dialtone"
    if view.screen is Screen.CALLING and view.remote_ringing:
        return "ringback"
    return None
