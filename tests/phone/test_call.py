"""CallMachine (pure): the transition table and illegal inputs, no event loop."""

from __future__ import annotations

import itertools

import pytest

from appliance.errors import InvalidStateError
from appliance.phone.call import CallDirection, CallInput, CallMachine, CallState

S, In = CallState, CallInput
LIVE = (S.PENDING, S.CONNECTING, S.RINGING, S.OPEN, S.RECONNECTING)

#: The whole table, written out: (state, input) -> next state.
TABLE: dict[tuple[CallState, CallInput], CallState] = {
    (S.PENDING, In.ACCEPT): S.CONNECTING,
    (S.PENDING, In.REJECT): S.CLOSED,
    (S.PENDING, In.IGNORE): S.CLOSED,
    (S.PENDING, In.CANCEL): S.CLOSED,
    (S.CONNECTING, In.CANCEL): S.CLOSED,
    (S.CONNECTING, In.RINGING): S.RINGING,
    (S.RINGING, In.RINGING): S.RINGING,
    (S.CONNECTING, In.ANSWERED): S.OPEN,
    (S.RINGING, In.ANSWERED): S.OPEN,
    # Signaling lost with a reconnect token, then resumed (§4.4).
    (S.OPEN, In.SIGNALING_LOST): S.RECONNECTING,
    (S.RECONNECTING, In.RESUMED): S.OPEN,
    **{(state, In.HANGUP): S.CLOSED for state in LIVE},
    **{(state, In.FAIL): S.CLOSED for state in LIVE},
}

#: Inputs that bring a new call into each state.
PATHS: dict[CallState, tuple[CallDirection, tuple[CallInput, ...]]] = {
    S.PENDING: (CallDirection.INCOMING, ()),
    S.CONNECTING: (CallDirection.OUTGOING, ()),
    S.RINGING: (CallDirection.OUTGOING, (In.RINGING,)),
    S.OPEN: (CallDirection.OUTGOING, (In.ANSWERED,)),
    S.RECONNECTING: (CallDirection.OUTGOING, (In.ANSWERED, In.SIGNALING_LOST)),
    S.CLOSED: (CallDirection.OUTGOING, (In.HANGUP,)),
}


def call_in(state: CallState) -> CallMachine:
    direction, inputs = PATHS[state]
    machine = CallMachine(direction)
    for what in inputs:
        machine.apply(what)
    assert machine.state is state
    return machine


def test_an_incoming_call_starts_pending_and_an_outgoing_one_connecting() -> None:
    assert CallMachine(CallDirection.INCOMING).state is S.PENDING
    assert CallMachine(CallDirection.OUTGOING).state is S.CONNECTING


def test_an_incoming_call_is_accepted_answered_and_hung_up() -> None:
    call = CallMachine(CallDirection.INCOMING)
    assert call.apply(In.ACCEPT) is S.CONNECTING
    assert call.apply(In.ANSWERED) is S.OPEN
    assert call.apply(In.HANGUP) is S.CLOSED
    assert call.direction is CallDirection.INCOMING


def test_an_outgoing_call_may_ring_more_than_once_before_the_answer() -> None:
    call = CallMachine(CallDirection.OUTGOING)
    assert call.apply(In.RINGING) is S.RINGING
    assert call.apply(In.RINGING) is S.RINGING
    assert call.apply(In.ANSWERED) is S.OPEN


@pytest.mark.parametrize(
    ("state", "what"), sorted(TABLE), ids=[f"{s}-{i}" for s, i in sorted(TABLE)]
)
def test_every_allowed_input_moves_to_its_state(
    state: CallState, what: CallInput
) -> None:
    call = call_in(state)
    assert call.can(what)
    assert call.apply(what) is TABLE[(state, what)]
    assert call.state is TABLE[(state, what)]


ILLEGAL = sorted(set(itertools.product(CallState, CallInput)) - set(TABLE))


@pytest.mark.parametrize(
    ("state", "what"), ILLEGAL, ids=[f"{s}-{i}" for s, i in ILLEGAL]
)
def test_every_other_input_raises_and_leaves_the_state(
    state: CallState, what: CallInput
) -> None:
    call = call_in(state)
    assert not call.can(what)
    with pytest.raises(InvalidStateError) as raised:
        call.apply(what)
    assert raised.value.message == f"cannot {what} while {state}"
    assert raised.value.code == 31000
    assert call.state is state


def test_a_call_can_reconnect_more_than_once_and_end_while_reconnecting() -> None:
    call = call_in(S.OPEN)
    for _ in range(2):
        assert call.apply(In.SIGNALING_LOST) is S.RECONNECTING
        assert not call.can(In.ANSWERED)  # a reconnect answer is RESUMED
        assert call.apply(In.RESUMED) is S.OPEN
    call.apply(In.SIGNALING_LOST)
    assert call.apply(In.FAIL) is S.CLOSED


def test_a_closed_call_takes_no_input_at_all() -> None:
    call = call_in(S.CLOSED)
    for what in CallInput:
        assert not call.can(what)
        with pytest.raises(InvalidStateError):
            call.apply(what)
    assert call.state is S.CLOSED


def test_an_outgoing_call_cannot_be_accepted_rejected_or_ignored() -> None:
    # Those are the callee's inputs: a call we placed never sees them.
    for what in (In.ACCEPT, In.REJECT, In.IGNORE):
        call = CallMachine(CallDirection.OUTGOING)
        with pytest.raises(InvalidStateError, match=f"cannot {what} while"):
            call.apply(what)
