"""Connection: one call, as Twilio.Connection (1.x names, snake_case).

A Connection is driven from two sides: the application (accept, reject, ignore,
disconnect, mute, send_digits) and the signaling messages for its CallSid, which
the Device hands over to :meth:`Connection.deliver`. Messages are processed one
at a time by the connection's own task, because applying an SDP answer awaits
aiortc and a ``hangup`` right behind an ``answer`` must wait for it. Every state
change goes through the pure :class:`~appliance.phone.call.CallMachine`.

An open call whose signaling socket drops may be held and taken back
(signaling-protocol.md §4.4): :mod:`appliance.phone.reconnect` keeps what that
needs and states the rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from appliance.errors import (
    ApplianceError,
    InvalidStateError,
    MediaError,
    TwilioError,
    error_for_code,
    error_from_payload,
)
from appliance.events import Emitter, EventSource
from appliance.log import LogLimiter, wire
from appliance.media import dtmf
from appliance.phone import meters
from appliance.phone.call import CallDirection, CallInput, CallMachine, CallState
from appliance.phone.pacing import DigitPacer
from appliance.phone.reconnect import CallReconnect
from appliance.signaling.messages import REJECT_BUSY, Message, MessageType
from appliance.tasks import TaskSet

if TYPE_CHECKING:
    from appliance.media.session import MediaSession

__all__ = ["CONNECTION_EVENTS", "Connection"]

logger = logging.getLogger(__name__)

CONNECTION_EVENTS = frozenset(
    {
        "accept",
        "cancel",
        "disconnect",
        "dtmf",
        "error",
        "message",
        "mute",
        "reconnected",
        "reconnecting",
        "reject",
        "ringing",
        "volume",
        "warning",
        "warning-cleared",
    }
)

#: States in which the call's media runs (signaling may be down meanwhile).
_MEDIA_UP = (CallState.OPEN, CallState.RECONNECTING)
_INBOX_SIZE = 64


class CallHost(Protocol):
    """What a Connection needs from its Device (not the Device itself: these
    are not part of the Twilio API)."""

    @property
    def enable_ringing_state(self) -> bool:
        """Whether outgoing calls report the ringing state (a Device option)."""
        ...

    @property
    def signaling_grace_s(self) -> float:
        """How long an open call waits for lost signaling (0: it ends at once)."""
        ...

    def send(self, message: Message) -> bool:
        """Send a signaling message; False if there is no session."""
        ...

    def new_media(self, connection: Connection) -> MediaSession:
        """Build the call's media on the Device's audio devices (TwilioError)."""
        ...

    async def before_accept(self, connection: Connection) -> None:
        """Make room for ``connection`` (hang up the call it replaces)."""
        ...

    def call_opened(self, connection: Connection) -> None:
        """``connection`` was answered and is now the active call."""
        ...

    def call_sid_changed(self, connection: Connection, old: str) -> None:
        """The gateway gave ``connection`` its real CallSid (``old`` stays an alias)."""
        ...

    def call_ended(self, connection: Connection) -> None:
        """``connection`` is over: forget it."""
        ...

    def digit_feedback(self, digit: str) -> None:
        """Play local feedback for a digit sent."""
        ...

    def emit(self, event: str, *args: Any) -> None:
        """Emit a Device event."""
        ...


class Connection(EventSource):
    """One incoming or outgoing call.

    Attributes:
        direction: incoming or outgoing.
        parameters: Twilio's call parameters (CallSid, From, To, AccountSid, ...).
        custom_parameters: for an incoming call the caller's custom parameters;
            for an outgoing call the params given to ``Device.connect``.
    """

    def __init__(
        self,
        host: CallHost,
        direction: CallDirection,
        *,
        call_sid: str,
        parameters: dict[str, str] | None = None,
        custom_parameters: dict[str, str] | None = None,
        offer_sdp: str | None = None,
        reconnect_token: str | None = None,
    ) -> None:
        self._host = host
        self._machine = CallMachine(direction)
        #: The quality score of the newest stats sample (None: none yet).
        self.last_mos: float | None = None
        #: The newest sample's receive jitter, and the packets lost so far as a
        #: percentage of those expected (None: no sample yet).
        self.last_jitter_s: float | None = None
        self.loss_percent: float | None = None
        self.direction = direction
        self.call_sid = call_sid
        self.parameters: dict[str, str] = dict(parameters or {})
        self.custom_parameters: dict[str, str] = dict(custom_parameters or {})
        self._offer_sdp = offer_sdp
        self._reconnect = CallReconnect(reconnect_token)
        self._media: MediaSession | None = None
        self._remote_applied = False
        self._muted = False
        self._received_digits = DigitPacer(self._live)  # replayed as dtmf events
        self._sent_digits = DigitPacer(self._live)  # local feedback tones
        self._events = Emitter(CONNECTION_EVENTS)
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(_INBOX_SIZE)
        # A gateway flooding one call would otherwise write a line per frame.
        self._inbox_complaints = LogLimiter()
        self._tasks = TaskSet(logger, "call")
        self._spawn(self._process_inbox(), "call-inbox")
        self.log = logging.LoggerAdapter(logger, {"call_sid": call_sid})

    def __repr__(self) -> str:
        return f"<Connection {self.direction} {self.call_sid} {self.status()}>"

    # ---- the public API --------------------------------------------------------------

    def status(self) -> str:
        """``pending``, ``connecting``, ``ringing``, ``open`` or ``closed``."""
        return str(self._machine.state)

    @property
    def state(self) -> CallState:
        """The call state as an enum."""
        return self._machine.state

    def is_muted(self) -> bool:
        """Whether the microphone is muted for this call."""
        return self._muted

    async def accept(self) -> None:
        """Answer a pending incoming call.

        Raises:
            InvalidStateError: the call is not pending.
            TwilioError: the media could not be set up (also emitted as error).
        """
        self._machine.apply(CallInput.ACCEPT)
        try:
            await self._host.before_accept(self)
            if self._machine.state is not CallState.CONNECTING:
                return  # cancelled while the other call was being hung up
            try:
                self._media = self._new_media()
                assert self._offer_sdp is not None
                answer = await self._media.accept_offer(self._offer_sdp)
            except TwilioError as exc:
                if not self._machine.can(CallInput.FAIL):
                    return  # cancelled meanwhile: _finish closed the media under us
                await self._fail(exc, send_hangup=True)
                raise
        except asyncio.CancelledError:
            # The gateway rings us for this call: hang up, which it takes as
            # declined for this phone (as disconnect() while connecting does).
            self._abandon(send_hangup=True)
            raise
        if self._machine.state is not CallState.CONNECTING:
            return  # cancelled while the answer was being built
        self._reconnect.sent(answer)
        self._host.send(
            Message(MessageType.ANSWER, {"callsid": self.call_sid, "sdp": answer})
        )
        self._opened()

    def reject(self, *, busy: bool = False) -> None:
        """Decline a pending incoming call; the caller gets a hangup with 31603.

        Args:
            busy: decline as busy here (do-not-disturb), not in the SDK: the
                ``reject`` carries ``reason: "busy"`` and our exchange gives
                the caller 31486 once no other phone rings; the real gateway
                ignores the key and declines as for a plain reject.
        """
        self._machine.apply(CallInput.REJECT)
        payload: dict[str, object] = {"callsid": self.call_sid}
        if busy:
            payload["reason"] = REJECT_BUSY
        self._host.send(Message(MessageType.REJECT, payload))
        self._events.emit("reject")
        self._finish()

    def ignore(self) -> None:
        """Stop ringing locally; the caller keeps ringing until it gives up.

        As in Twilio.Connection 1.x, the call emits ``cancel``.
        """
        self._machine.apply(CallInput.IGNORE)
        self._events.emit("cancel")
        self._finish()

    async def disconnect(self) -> None:
        """Hang up (a pending incoming call is rejected)."""
        if self._machine.state is CallState.PENDING:
            self.reject()
            return
        if not self._machine.can(CallInput.HANGUP):
            return  # already closed: nothing to do, as in the SDK
        if self._machine.state is CallState.RECONNECTING:
            # Queued behind the next listen: take the call back, then end it,
            # so that the far party hears the hangup now, not at the grace.
            self._host.send(self._reconnect.invite(self.call_sid))
        self._machine.apply(CallInput.HANGUP)
        self._host.send(Message(MessageType.HANGUP, {"callsid": self.call_sid}))
        await self._closed()

    def mute(self, should_mute: bool = True) -> None:
        """Mute or unmute the microphone; emits ``mute(is_muted, connection)``."""
        if not isinstance(should_mute, bool):
            raise TypeError("should_mute must be a bool")
        if should_mute == self._muted:
            return
        self._muted = should_mute
        if self._media is not None:
            self._media.set_muted(should_mute)
        self._events.emit("mute", should_mute, self)

    def send_digits(self, digits: str) -> None:
        """Send DTMF: 0-9, ``*``, ``#``, and ``w`` for a 500 ms pause.

        The digits go in the media as RFC 4733 telephone-events when the far
        side accepted them, otherwise as the protocol's ``dtmf`` message, as
        Twilio.Device does when it has no RTP DTMF sender
        (signaling-protocol.md §2.2).

        Raises:
            InvalidArgumentError: illegal characters.
            InvalidStateError: the call is not connecting, ringing or open.
        """
        dtmf.validate(digits)
        if self._machine.state not in (
            CallState.CONNECTING,
            CallState.RINGING,
            *_MEDIA_UP,
        ):
            raise InvalidStateError(message=f"cannot send digits while {self.status()}")
        if self._media is not None and self._media.events.can_send:
            self._media.events.send(digits)
        else:
            self._host.send(
                Message(MessageType.DTMF, {"callsid": self.call_sid, "dtmf": digits})
            )
        # Local feedback tones, timed like the digits and queued after any
        # earlier string (the far phone replays them with the same schedule).
        self._sent_digits.play(digits, self._host.digit_feedback)

    @property
    def codec(self) -> str | None:
        """The audio codec we send, once negotiated."""
        return self._media.codec if self._media is not None else None

    @property
    def receive_codec(self) -> str | None:
        """The audio codec of the packets received (None before the first)."""
        return self._media.receive_codec if self._media is not None else None

    # ---- engine side (the Device calls these; not part of the Twilio API) ---------

    def _new_media(self) -> MediaSession:
        media = self._host.new_media(self)
        # RFC 4733 digits arrive in real time: no replay schedule.
        media.events.on_digit = functools.partial(
            self._received_digits.fire, self._emit_digit
        )
        return media

    async def start_outgoing(self, invite_payload: dict[str, Any]) -> None:
        """Create the offer and send the invite (Device.connect)."""
        try:
            self._media = self._new_media()
            offer = await self._media.create_offer()
        except TwilioError as exc:
            await self._fail(exc, send_hangup=False)
            raise
        except asyncio.CancelledError:
            # No invite went out, so the gateway knows nothing of this call.
            self._abandon(send_hangup=False)
            raise
        if self._machine.state is CallState.CLOSED:
            return
        self._reconnect.sent(offer)
        payload = {"callsid": self.call_sid, "sdp": offer, **invite_payload}
        self._host.send(Message(MessageType.INVITE, payload))

    def deliver(self, message: Message) -> None:
        """Queue a signaling message for this call (called by the Device)."""
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            suppressed = self._inbox_complaints.allow(None, time.monotonic())
            if suppressed is not None:
                self.log.error(
                    "call inbox full; %s dropped%s",
                    message.type,
                    LogLimiter.note(suppressed),
                )

    def transport_lost(self, error: TwilioError, *, resumable: bool = False) -> None:
        """The signaling socket is gone; ``resumable``: a reconnect is coming."""
        grace = self._host.signaling_grace_s
        if self._machine.state is CallState.PENDING:
            self._cancelled()
        elif resumable and self._reconnect.possible(grace):
            if self._machine.can(CallInput.SIGNALING_LOST):
                self._machine.apply(CallInput.SIGNALING_LOST)
                self.log.info("call %s reconnecting", wire(self.call_sid))
                self._reconnect.hold(grace, self._grace_over)
                lost = error_for_code(53001, error.message, call_sid=self.call_sid)
                lost.connection = self
                self._events.emit("reconnecting", lost)
        elif self._machine.can(CallInput.FAIL):
            self._spawn(self._fail(error, send_hangup=False), "call-fail")

    def resume_signaling(self) -> None:
        """The Device is connected again: ask the gateway for this call back."""
        if self._machine.state is CallState.RECONNECTING:
            self._host.send(self._reconnect.invite(self.call_sid))

    def _grace_over(self, grace_s: float) -> None:
        if self._machine.state is CallState.RECONNECTING:
            why = f"signaling did not come back within {grace_s:g} s"
            error = error_for_code(31003, why, call_sid=self.call_sid)
            self._spawn(self._fail(error, send_hangup=False), "call-fail")

    def media_failed(self) -> None:
        """ICE failed or consent expired (aiortc callback, already on the loop)."""
        if self._machine.can(CallInput.FAIL):
            error = error_for_code(
                31003, "Connection with Twilio was interrupted.", call_sid=self.call_sid
            )
            self._spawn(self._fail(error, send_hangup=True), "call-media-failed")

    # ---- message handling ------------------------------------------------------------

    async def _process_inbox(self) -> None:
        while self._machine.state is not CallState.CLOSED:
            message = await self._inbox.get()
            try:
                await self._handle(message)
            except ApplianceError as exc:
                self.log.warning("! %s while handling %s", exc, message.type)

    async def _handle(self, message: Message) -> None:
        kind = message.type
        payload = message.payload
        if kind is MessageType.RINGING:
            self._set_call_sid(message.callsid)
            sdp = payload.get("sdp")
            if self._host.enable_ringing_state:
                if self._machine.can(CallInput.RINGING):
                    self._machine.apply(CallInput.RINGING)
                    if isinstance(sdp, str) and not await self._apply_remote(sdp):
                        return  # early media failed and ended the call
                    self._events.emit("ringing", isinstance(sdp, str))
            elif isinstance(sdp, str):
                # 1.x without the ringing state treats early media as the answer.
                await self._on_answer(sdp)
        elif kind is MessageType.ANSWER:
            self._set_call_sid(message.callsid)
            self._reconnect.renew(payload.get("reconnect"))
            if self._machine.can(CallInput.RESUMED):
                self._machine.apply(CallInput.RESUMED)
                self._reconnect.resumed()
                self.log.info("call %s reconnected", wire(self.call_sid))
                self._events.emit("reconnected")
                return
            await self._on_answer(str(payload["sdp"]))
        elif kind is MessageType.HANGUP:
            await self._on_hangup(payload.get("error"))
        elif kind is MessageType.CANCEL:
            if self._machine.can(CallInput.CANCEL):
                self._cancelled()
        elif kind is MessageType.DTMF:
            self._received_digits.play(str(payload["dtmf"]), self._emit_digit)
        elif kind is MessageType.MESSAGE:
            self._events.emit("message", dict(payload))
        elif kind is MessageType.ERROR:
            self._report(
                error_from_payload(
                    payload.get("error"), default_code=31000, call_sid=self.call_sid
                )
            )
        else:
            self.log.debug("< %s ignored for this call", kind)

    async def _apply_remote(self, sdp: str) -> bool:
        if self._remote_applied:
            return True
        assert self._media is not None
        try:
            await self._media.apply_answer(sdp)
        except TwilioError as exc:
            await self._fail(exc, send_hangup=True)
            return False
        self._remote_applied = True
        return True

    async def _on_answer(self, sdp: str) -> None:
        if not self._machine.can(CallInput.ANSWERED) or self._media is None:
            return
        if await self._apply_remote(sdp) and self._machine.can(CallInput.ANSWERED):
            self._opened()

    async def _on_hangup(self, raw_error: object) -> None:
        if not self._machine.can(CallInput.HANGUP):
            return
        if isinstance(raw_error, dict):
            self._report(
                error_from_payload(
                    raw_error, default_code=31005, call_sid=self.call_sid
                )
            )
        if self._machine.state is CallState.PENDING:
            # The caller gave up before we answered: that is a cancel.
            self._cancelled()
            return
        self._machine.apply(CallInput.HANGUP)
        await self._closed()

    def _live(self) -> bool:
        return self._machine.state is not CallState.CLOSED

    def _emit_digit(self, digit: str) -> None:
        self._events.emit("dtmf", digit)

    def _cancelled(self) -> None:
        """The pending call was withdrawn (cancel, caller hung up, signaling lost)."""
        self._machine.apply(CallInput.CANCEL)
        self._events.emit("cancel")
        self._host.emit("cancel", self)
        self._finish()

    # ---- transitions -----------------------------------------------------------------

    def _set_call_sid(self, sid: str | None) -> None:
        if sid and sid != self.call_sid:
            old, self.call_sid = self.call_sid, sid
            self.parameters["CallSid"] = sid
            self.log = logging.LoggerAdapter(logger, {"call_sid": sid})
            self._host.call_sid_changed(self, old)

    def _opened(self) -> None:
        self._machine.apply(CallInput.ANSWERED)
        self.log.info(
            "call %s open (%s, codec %s)",
            wire(self.call_sid),
            self.direction,
            self.codec,
        )
        if self._muted and self._media is not None:
            self._media.set_muted(True)
        media, emit = self._running_media, self._events.emit
        self._spawn(meters.emit_volume(media, emit), "call-volume")
        quality = meters.sample_quality(media, emit, self._note_quality, self.log)
        self._spawn(quality, "call-quality")
        self._host.call_opened(self)
        self._events.emit("accept", self)
        self._host.emit("connect", self)

    def _report(self, error: TwilioError) -> None:
        error.connection = self
        self._events.emit("error", error)
        self._host.emit("error", error)

    async def _fail(self, error: TwilioError, *, send_hangup: bool) -> None:
        if not self._machine.can(CallInput.FAIL):
            return
        pending = self._machine.state is CallState.PENDING
        self._machine.apply(CallInput.FAIL)
        self._report(error)
        if send_hangup:
            payload: dict[str, Any] = {"callsid": self.call_sid}
            payload["message"] = error.message  # the SDK's reason text
            if error.code == 31003:  # media lost: the exchange tells the far party
                payload["error"] = {"code": error.code, "message": error.message}
            self._host.send(Message(MessageType.HANGUP, payload))
        if pending:
            self._finish()
        else:
            await self._closed()

    def _abandon(self, *, send_hangup: bool) -> None:
        """End the call as a hang-up would, without awaiting anything.

        For a connect() or accept() cancelled while the SDP was built: the call
        must not stay connecting, holding the line (device busy) and its media.
        Nothing is awaited (the task is being cancelled, and another cancel
        would stop a teardown halfway): the media closes in the background, as
        after reject().
        """
        if not self._machine.can(CallInput.HANGUP):
            return  # already ended (failed or cancelled meanwhile)
        self._machine.apply(CallInput.HANGUP)
        if send_hangup:
            self._host.send(Message(MessageType.HANGUP, {"callsid": self.call_sid}))
        self.log.info("call %s abandoned", wire(self.call_sid))
        self._events.emit("disconnect", self)
        self._host.emit("disconnect", self)
        self._finish()

    async def _closed(self) -> None:
        """Tear down media and tell everyone the call is over."""
        await self._stop_media()
        self.log.info("call %s closed", wire(self.call_sid))
        self._events.emit("disconnect", self)
        self._host.emit("disconnect", self)
        self._finish()

    def _finish(self) -> None:
        self._host.call_ended(self)
        if self._media is not None:
            self._spawn(self._stop_media(), "call-media-close")
        self._tasks.cancel(keep=lambda task: task.get_name() == "call-media-close")

    async def _stop_media(self) -> None:
        media, self._media = self._media, None
        if media is not None:
            try:
                await media.close()
            except MediaError as exc:
                self.log.warning("media close failed: %s", exc)

    async def wait_closed(self) -> None:
        """Wait until every task of this call has ended (Device.destroy)."""
        await self._tasks.wait()
        await self._events.drain()

    def _running_media(self) -> MediaSession | None:
        return self._media if self._machine.state in _MEDIA_UP else None

    def _note_quality(self, score: float, jitter_s: float, loss: float) -> None:
        self.last_mos = score
        self.last_jitter_s = jitter_s
        self.loss_percent = loss

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)
