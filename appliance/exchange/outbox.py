"""What the exchange core has to say: frames, sockets to close, echo requests.

Why a module of its own: the session rules (:mod:`appliance.exchange.core`)
and the call rules (:mod:`appliance.exchange.calls`) both answer clients, and
every frame the exchange sends passes one last check here, against the relay
limit a phone accepts (:mod:`appliance.signaling.limits`). Error messages may
quote what a client sent, so they are cut here, to a length the relay limit
has room for, before the frame is built. The adapter drains
the three lists after every input, in the order documented in the core.

Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import Any

from appliance.exchange.fields import Refusal
from appliance.exchange.model import EchoRequest
from appliance.log import LogLimiter, wire
from appliance.signaling.limits import (
    ERROR_MESSAGE_MAX_CHARS,
    RELAY_MAX_FRAME_BYTES,
    text_size,
)
from appliance.signaling.messages import GATEWAY_VERSION, Message, MessageType, encode

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)


class Outbox:
    """Frames and requests queued for the adapter.

    Args:
        sessions: the open sessions; frames for others are dropped (a session
            closed while a call was being ended, say).
    """

    def __init__(self, sessions: Container[int]) -> None:
        self._sessions = sessions
        self._frames: list[tuple[int, str]] = []
        self._to_close: list[int] = []
        self._echo: list[EchoRequest] = []
        self._complaints = LogLimiter()
        #: Monotonic seconds of the input being handled (set by the core).
        self.now = 0.0
        #: The last guard's log line, for all sessions together.
        self._oversize = LogLimiter()

    # ---- queueing ----------------------------------------------------------

    def raw(self, sid: int, text: str) -> None:
        """Queue a frame as it is (a heartbeat)."""
        self._frames.append((sid, text))

    def send(self, sid: int, kind: MessageType, payload: dict[str, Any]) -> None:
        """Queue ``kind`` with ``payload`` for ``sid`` (gateway version ``""``)."""
        if sid not in self._sessions:
            return
        if logger.isEnabledFor(logging.DEBUG):
            callsid = wire(payload.get("callsid", ""))
            logger.debug("> session %d: %s %s", sid, kind, callsid)
        text = encode(Message(kind, payload, GATEWAY_VERSION))
        if (
            len(text) > RELAY_MAX_FRAME_BYTES // 4
            and text_size(text) > RELAY_MAX_FRAME_BYTES
        ):
            # The last guard: a phone would drop its signaling over a frame
            # this large. The field caps and the cut error messages keep every
            # frame built here under the limit (limits.check_consistency), so
            # this is a bug; it is rate-limited all the same, as a client could
            # trigger it once per frame if a new path forgot a cap.
            suppressed = self._oversize.allow("oversize", self.now)
            if suppressed is not None:
                logger.error(
                    "! session %d: %s frame too large to send: dropped%s",
                    sid,
                    kind,
                    LogLimiter.note(suppressed),
                )
            return
        self._frames.append((sid, text))

    def error(
        self,
        sid: int,
        code: int,
        message: str,
        *,
        callsid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Queue ``error{code, message}``, optionally naming a call."""
        if len(message) > ERROR_MESSAGE_MAX_CHARS:
            message = wire(message, ERROR_MESSAGE_MAX_CHARS)
        payload: dict[str, Any] = {"error": {"code": code, "message": message}}
        if callsid is not None:
            payload["callsid"] = callsid
        if extra:
            payload.update(extra)
        self.send(sid, MessageType.ERROR, payload)

    def refuse(self, sid: int, refusal: Refusal, *, callsid: str | None = None) -> None:
        """Answer a refused field with ``error`` (the frame is not acted on)."""
        self.error(sid, refusal.code, refusal.message, callsid=callsid)

    def hangup(
        self, sid: int, callsid: str, code: int | None = None, message: str = ""
    ) -> None:
        """Queue ``hangup{callsid}``, with an error when ``code`` is given."""
        payload: dict[str, Any] = {"callsid": callsid}
        if code is not None:
            payload["error"] = {"code": code, "message": message}
        self.send(sid, MessageType.HANGUP, payload)

    def complain(self, sid: int, now: float, refusal: Refusal) -> None:
        """Log that ``sid`` sent something refused: INFO, rate-limited per session.

        A client that floods bad frames gets each one answered but writes a
        few lines per minute to the log, then a count of those not logged.
        """
        suppressed = self._complaints.allow(sid, now)
        if suppressed is not None:
            logger.info(
                "session %d: refused (%d): %s%s",
                sid,
                refusal.code,
                wire(refusal.message),
                LogLimiter.note(suppressed),
            )

    def forget(self, sid: int) -> None:
        """``sid`` is gone: report the complaints about it never logged."""
        suppressed = self._complaints.forget(sid)
        if suppressed:
            logger.info("session %d: %d refusals were not logged", sid, suppressed)

    def close(self, sid: int) -> None:
        """Close ``sid`` once the frames queued before this are written."""
        self._to_close.append(sid)

    def echo(self, request: EchoRequest) -> None:
        """Ask the adapter to start or stop echo media."""
        self._echo.append(request)

    # ---- drains ------------------------------------------------------------

    def frames_to_send(self) -> list[tuple[int, str]]:
        """Return and clear ``(session, text)`` frames, in sending order."""
        frames, self._frames = self._frames, []
        return frames

    def sessions_to_close(self) -> list[int]:
        """Return and clear sessions to close once their frames are written."""
        sessions, self._to_close = self._to_close, []
        return sessions

    def echo_requests(self) -> list[EchoRequest]:
        """Return and clear echo media requests."""
        requests, self._echo = self._echo, []
        return requests
