"""What one call keeps to be taken back after its signaling socket drops.

Signaling reconnect (signaling-protocol.md §4.4): an open call with a reconnect
token (``answer.reconnect``, ``invite.reconnect``) whose socket drops goes
``reconnecting`` (53001) and keeps its media when the Device allows it
(``max_call_signaling_timeout_ms``); connected again, it sends
``invite{callsid, reconnect, sdp}`` and the gateway's ``answer`` makes it
``open`` (``reconnected``). Past the grace it fails with 31003.

Why a module of its own: the :class:`~appliance.phone.connection.Connection`
decides *when* a call is held, resumed or failed (its state machine does). What
it must remember for that is a separate, small job: the newest token the
gateway gave the call, the SDP we sent (a reconnect invite repeats it), and the
grace timer. :class:`CallReconnect` keeps those three and builds the reconnect
invite from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from appliance.signaling.messages import Message, MessageType

__all__ = ["CallReconnect"]


class CallReconnect:
    """The reconnect token, local SDP and grace timer of one call.

    Args:
        token: the reconnect token of an incoming call's ``invite``, if any.
    """

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._local_sdp = ""  # what we sent; a reconnect invite repeats it
        self._grace: asyncio.TimerHandle | None = None  # while reconnecting

    def sent(self, sdp: str) -> None:
        """Our offer or answer went out: a reconnect invite repeats it."""
        self._local_sdp = sdp

    def renew(self, token: object) -> None:
        """An ``answer`` carried ``reconnect``: the newest token replaces ours."""
        if isinstance(token, str) and token:
            self._token = token

    def possible(self, grace_s: float) -> bool:
        """Whether the call can wait ``grace_s`` for signaling (it has a token)."""
        return grace_s > 0 and self._token is not None

    def hold(self, grace_s: float, over: Callable[[float], None]) -> None:
        """Start the grace: ``over(grace_s)`` runs on the loop when it passes."""
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(grace_s, over, grace_s)

    def resumed(self) -> None:
        """The gateway gave the call back: the grace no longer runs."""
        if self._grace is not None:
            self._grace.cancel()

    def invite(self, call_sid: str) -> Message:
        """``invite{callsid, reconnect, sdp}``: ask the gateway for the call back."""
        payload: dict[str, Any] = {"callsid": call_sid, "twilio": {}}
        payload.update(reconnect=self._token, sdp=self._local_sdp)
        return Message(MessageType.INVITE, payload)
