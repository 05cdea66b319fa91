"""The call state machine (pure): states, inputs and the transition table.

Rules of this file: states and inputs are enums; the table below is the only
place a call changes state; any other combination raises
:class:`~appliance.errors.InvalidStateError`. States follow Twilio.Connection:
an incoming call starts ``pending``, an outgoing call ``connecting``; ``accept``
moves a pending call to ``connecting``; the call is ``open`` once the answer SDP
is applied (not when ICE connects, signaling-protocol.md §5); ``ringing`` is
entered only when the ringing state is enabled; an open call whose signaling
socket dropped is ``reconnecting`` (media flows on) until the gateway resumes
it (``open`` again) or it ends (§4.4); everything ends ``closed``.
"""

from __future__ import annotations

from enum import StrEnum

from appliance.errors import InvalidStateError

__all__ = ["CallDirection", "CallInput", "CallMachine", "CallState"]


class CallState(StrEnum):
    """Twilio.Connection status values."""

    PENDING = "pending"
    CONNECTING = "connecting"
    RINGING = "ringing"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class CallDirection(StrEnum):
    """Who placed the call."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


class CallInput(StrEnum):
    """What can happen to a call."""

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"
    CANCEL = "cancel"
    RINGING = "ringing"
    ANSWERED = "answered"
    HANGUP = "hangup"
    FAIL = "fail"
    SIGNALING_LOST = "signaling_lost"
    RESUMED = "resumed"


_S, _I = CallState, CallInput
_LIVE = (_S.PENDING, _S.CONNECTING, _S.RINGING, _S.OPEN, _S.RECONNECTING)

_TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (_S.PENDING, _I.ACCEPT): _S.CONNECTING,
    (_S.PENDING, _I.REJECT): _S.CLOSED,
    (_S.PENDING, _I.IGNORE): _S.CLOSED,
    (_S.PENDING, _I.CANCEL): _S.CLOSED,
    # Accepted, but the caller hung up before our answer reached the gateway.
    (_S.CONNECTING, _I.CANCEL): _S.CLOSED,
    (_S.CONNECTING, _I.RINGING): _S.RINGING,
    (_S.RINGING, _I.RINGING): _S.RINGING,
    (_S.CONNECTING, _I.ANSWERED): _S.OPEN,
    (_S.RINGING, _I.ANSWERED): _S.OPEN,
    (_S.OPEN, _I.SIGNALING_LOST): _S.RECONNECTING,
    (_S.RECONNECTING, _I.RESUMED): _S.OPEN,
    **{(state, _I.HANGUP): _S.CLOSED for state in _LIVE},
    **{(state, _I.FAIL): _S.CLOSED for state in _LIVE},
}


class CallMachine:
    """Current state of one call, changed only through :meth:`apply`."""

    def __init__(self, direction: CallDirection) -> None:
        self.direction = direction
        self.state = (
            CallState.PENDING
            if direction is CallDirection.INCOMING
            else CallState.CONNECTING
        )

    def can(self, what: CallInput) -> bool:
        """Tell whether ``what`` is allowed now."""
        return (self.state, what) in _TRANSITIONS

    def apply(self, what: CallInput) -> CallState:
        """Apply an input and return the new state.

        Raises:
            InvalidStateError: the input is not allowed in the current state.
        """
        try:
            self.state = _TRANSITIONS[(self.state, what)]
        except KeyError:
            raise InvalidStateError(
                message=f"cannot {what} while {self.state}"
            ) from None
        return self.state
