"""Where the gateway's call frames go: an invite becomes a call, the rest find theirs.

Why a module of its own: :class:`~appliance.phone.device.Device` is the Twilio
API, what the application calls. What a frame from the gateway does to the
calls is decided the same way whatever the application does, and it is a job
of its own (:class:`CallDispatcher`):

* an ``invite`` becomes an incoming
  :class:`~appliance.phone.connection.Connection`, unless it repeats one we
  know, the Device is being destroyed (declined with ``reject``: the caller
  gets 31603 at once instead of ringing until the session drops), or a call
  is active and ``allow_incoming_while_busy`` is off (ignored silently, as
  Twilio.Device does);
* the new call is published as the typed fact ``CallOffered`` at once, so the
  front panel rings without waiting for the sound; the ring starts next, and
  the Twilio-facing ``incoming`` follows once it plays, or after 2 s at the
  latest, and not while busy (signaling-protocol.md §7);
* every other frame goes to the call its CallSid names. The gateway answers an
  invite with the real CallSid only, so, like the SDK, an outgoing call still
  known by its temporary ``TJS`` id takes the first ``ringing`` or ``answer``
  (signaling-protocol.md §5, "CallSid").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.log import wire
from appliance.phone.call import CallDirection, CallState
from appliance.phone.calls import CallBook
from appliance.phone.connection import CallHost, Connection
from appliance.phone.gateway import invite_parameters
from appliance.phone.options import DeviceOptions
from appliance.phone.ports import CallAudio, CallOffered, EngineEvent
from appliance.signaling.messages import Message, MessageType
from appliance.tasks import TaskSet

__all__ = ["CallDispatcher"]

logger = logging.getLogger(__name__)


class CallDispatcher:
    """Turns the gateway's call frames into calls and hands them to their calls.

    Args:
        host: the Device's call host: each new Connection talks back to it,
            and it sends messages and emits the Device's events.
        options: returns the Device's options in force.
        calls: the Device's calls.
        ring: the calls' side of Device.audio, which rings.
        tasks: the Device's tasks (each announcement is one).
        publish: publishes an engine fact to the Device's subscribers.
    """

    def __init__(
        self,
        host: CallHost,
        options: Callable[[], DeviceOptions],
        calls: CallBook,
        ring: CallAudio,
        tasks: TaskSet,
        publish: Callable[[EngineEvent], None],
    ) -> None:
        self._host = host
        self._options = options
        self._calls = calls
        self._ring = ring
        self._tasks = tasks
        self._publish = publish
        #: Set while Device.destroy() ends the calls: invites are declined.
        self.destroying = False

    def deliver(self, message: Message) -> None:
        """A frame from the gateway: a new call, or one for a call we know."""
        sid = message.callsid
        if message.type is MessageType.INVITE:
            self._on_invite(message)
            return
        conn = self._calls.get(sid)
        if conn is None and message.type in (MessageType.RINGING, MessageType.ANSWER):
            # The gateway answers an invite with the real CallSid only; like the
            # SDK, an outgoing call still known by its temporary TJS id takes the
            # first ringing/answer (signaling-protocol.md §5, "CallSid").
            conn = self._calls.unconfirmed_outgoing()
            if conn is not None and sid:
                # Alias at once: the call's inbox adopts the sid later, and a
                # hangup right behind this ringing must already find the call.
                self._calls.add(conn, sid)
        if conn is None:
            logger.debug("< %s for unknown call %s ignored", message.type, sid)
            return
        conn.deliver(message)

    def _on_invite(self, message: Message) -> None:
        payload = message.payload
        sid = str(payload["callsid"])
        if sid in self._calls:
            return  # a repeated invite for a call we already know
        if self.destroying:
            # Declined as destroy() declines a ringing call: the caller gets
            # 31603 at once instead of ringing until the session drops.
            logger.info(
                "incoming call %s declined: the device is being destroyed", wire(sid)
            )
            self._host.send(Message(MessageType.REJECT, {"callsid": sid}))
            return
        if self._calls.busy() and not self._options().allow_incoming_while_busy:
            # Twilio.Device ignores it silently (seed: allowIncomingWhileBusy).
            logger.info("incoming call %s ignored: busy", wire(sid))
            return
        parameters, custom = invite_parameters(payload, sid)
        conn = Connection(
            self._host,
            CallDirection.INCOMING,
            call_sid=sid,
            parameters=parameters,
            custom_parameters=custom,
            offer_sdp=str(payload["sdp"]),
            reconnect_token=str(payload.get("reconnect") or "") or None,
        )
        self._calls.add(conn)
        logger.info("incoming call %s from %s", wire(sid), wire(parameters.get("From")))
        self._publish(CallOffered(conn))
        # The ring starts first; ``incoming`` follows once it plays, or after
        # 2 s at the latest, and not while busy (signaling-protocol.md §7).
        self._tasks.spawn(
            self._announce_incoming(conn, ring=not self._calls.busy()),
            "device-incoming",
        )

    async def _announce_incoming(self, conn: Connection, *, ring: bool) -> None:
        await self._ring.ring(
            conn, ring=ring, wanted=lambda: conn.state is CallState.PENDING
        )
        if conn.state is CallState.PENDING:
            self._host.emit("incoming", conn)
