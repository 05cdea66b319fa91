"""Frames between the two legs of an answered call: ``dtmf``, ``message``, ``reinvite``.

Why a module of its own: :class:`~appliance.exchange.calls.CallRouter` decides
what happens to calls (who rings, who answers, who hangs up, which call is
held). Once a call is answered, the frames its legs send each other change
nothing about it; they are checked, passed to the other leg under that leg's
own callsid, and acknowledged. :class:`CallRelay` does only that, with the
router's :meth:`~appliance.exchange.calls.CallRouter.find` to name the call,
and it keeps no state of its own.

Local extensions and choices:

* ``dtmf{callsid, dtmf}`` is relayed to the other leg as ``dtmf`` with that
  leg's own callsid. The real gateway turns it into RFC 4733 towards the far
  end instead; both our legs speak this protocol, so relaying is simpler and
  exact. Digits to the echo destination are dropped (logged).
* ``message`` is relayed and acknowledged with ``ack``; to the echo
  destination it is echoed back.
* ``reinvite`` gets ``error 31100`` (no ICE restart: aiortc cannot do one).
* A frame for a call this session has no answered leg of gets
  ``error 31400``; a field over its cap gets the cap's code
  (:mod:`appliance.exchange.fields`).

Pure: no I/O; ``now`` is the caller's monotonic clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from appliance.exchange.fields import check_content, check_short
from appliance.exchange.model import Call, CallState, Session
from appliance.exchange.outbox import Outbox
from appliance.log import wire
from appliance.signaling.messages import Message, MessageType

__all__ = ["CallRelay"]

logger = logging.getLogger(__name__)

#: Finds the call a callsid names for a session; the bool says "is the caller".
FindCall = Callable[[Session, str], tuple[Call, bool] | None]


class CallRelay:
    """Relays the frames of answered calls between their legs (sans-I/O).

    Args:
        out: where frames go.
        find: the router's lookup of the call a callsid names for a session.
    """

    def __init__(self, out: Outbox, find: FindCall) -> None:
        self._out = out
        self._find = find

    def _peer(self, call: Call, is_caller: bool) -> tuple[int, str] | None:
        """The other leg of an answered call: (session, its callsid)."""
        if is_caller:
            if call.callee is None or call.child_sid is None:
                return None
            return call.callee, call.child_sid
        return call.caller, call.parent_sid

    def _active(
        self, session: Session, callsid: str, kind: str
    ) -> tuple[Call, bool] | None:
        found = self._find(session, callsid)
        if found is None:
            self._out.error(
                session.sid, 31400, f"{kind}: no such call", callsid=callsid
            )
            return None
        if found[0].state is not CallState.ACTIVE or (
            not found[1] and found[0].callee != session.sid
        ):
            self._out.error(
                session.sid, 31400, f"{kind}: call is not answered", callsid=callsid
            )
            return None
        return found

    def on_dtmf(self, session: Session, message: Message, now: float) -> None:
        """Relay digits to the other leg (not to the echo destination)."""
        callsid, digits = message.callsid or "", message.payload["dtmf"]
        if not isinstance(digits, str):
            self._out.error(
                session.sid, 31400, "dtmf: dtmf must be a string", callsid=callsid
            )
            return
        refused = check_short("dtmf", "dtmf", digits)
        if refused is not None:
            self._out.complain(session.sid, now, refused)
            self._out.refuse(session.sid, refused, callsid=callsid)
            return
        found = self._active(session, callsid, "dtmf")
        if found is None:
            return
        call, is_caller = found
        if call.is_echo:
            logger.info(
                "call %s: dtmf %s to the echo destination ignored",
                call.parent_sid,
                wire(digits),
            )
            return
        peer = self._peer(call, is_caller)
        if peer is not None:
            self._out.send(
                peer[0], MessageType.DTMF, {"callsid": peer[1], "dtmf": digits}
            )

    def on_message(self, session: Session, message: Message, now: float) -> None:
        """Relay a call message to the other leg (echo: back) and ``ack`` it."""
        callsid = message.callsid or ""
        event_sid = message.payload.get("voiceeventsid")
        refused = next(
            (
                r
                for r in (
                    check_short("message", key, message.payload.get(key))
                    for key in ("voiceeventsid", "contenttype", "messagetype")
                )
                if r is not None
            ),
            None,
        )
        if refused is not None:
            self._out.complain(session.sid, now, refused)
            self._out.refuse(session.sid, refused, callsid=callsid)
            return
        refused = check_content(message.payload.get("content"))
        if refused is not None:
            self._out.complain(session.sid, now, refused)
            # The SDK routes an error with voiceeventsid to its Call.
            extra = {"voiceeventsid": event_sid} if event_sid is not None else None
            self._out.error(
                session.sid,
                refused.code,
                refused.message,
                callsid=callsid,
                extra=extra,
            )
            return
        found = self._active(session, callsid, "message")
        if found is None:
            return
        call, is_caller = found
        forwarded: dict[str, Any] = {
            key: message.payload[key]
            for key in ("content", "contenttype", "messagetype", "voiceeventsid")
            if key in message.payload
        }
        peer = (
            (session.sid, call.parent_sid)
            if call.is_echo
            else self._peer(call, is_caller)
        )
        if peer is not None:
            self._out.send(
                peer[0], MessageType.MESSAGE, {"callsid": peer[1], **forwarded}
            )
        ack: dict[str, Any] = {"acktype": "message", "callsid": callsid}
        if event_sid is not None:
            ack["voiceeventsid"] = event_sid
        self._out.send(session.sid, MessageType.ACK, ack)

    def on_reinvite(self, session: Session, message: Message, now: float) -> None:
        """ICE restarts are not supported: 31100."""
        # aiortc cannot ICE-restart (anchors.md, aiortc#211), so neither do we.
        self._out.error(
            session.sid, 31100, "reinvite is not supported", callsid=message.callsid
        )
