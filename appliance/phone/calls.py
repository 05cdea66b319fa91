"""The Device's calls: found by CallSid (with aliases), and which one is active.

A call is known by more than one CallSid during its life: an outgoing call
starts with a temporary ``TJS...`` id and gets the gateway's real CallSid with
its first ``ringing`` or ``answer``, and a ``hangup`` may still carry the old
one (signaling-protocol.md §2.3, §5 "CallSid"). So every id a call was known
by stays an alias until the call ends. The *active* call is the one that holds
the line: the outgoing call being placed, or the incoming call accepted.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.phone.call import CallDirection, CallState
from appliance.phone.connection import Connection

__all__ = ["CallBook"]

#: States in which the active call holds the line (the Device is "busy").
_LINE_HELD = (
    CallState.CONNECTING,
    CallState.RINGING,
    CallState.OPEN,
    CallState.RECONNECTING,
)


class CallBook:
    """Calls by CallSid and the active call (see the module docstring)."""

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self._by_sid: dict[str, Connection] = {}
        #: The call that holds the line, if any.
        self.active: Connection | None = None
        #: Told the number of calls when a call is added or removed.
        self._on_change = on_change

    def __contains__(self, sid: str) -> bool:
        return sid in self._by_sid

    def get(self, sid: str | None) -> Connection | None:
        """The call known by ``sid`` (any of its ids), or None."""
        return self._by_sid.get(sid) if sid else None

    def add(self, connection: Connection, sid: str | None = None) -> None:
        """Know ``connection`` by ``sid`` too (by default its current CallSid)."""
        new = connection not in self._by_sid.values()
        self._by_sid[sid or connection.call_sid] = connection
        if new and self._on_change is not None:
            self._on_change(len(self.all()))

    def remove(self, connection: Connection) -> None:
        """Forget ``connection`` under every id; it no longer holds the line."""
        sids = [s for s, c in self._by_sid.items() if c is connection]
        for sid in sids:
            del self._by_sid[sid]
        if self.active is connection:
            self.active = None
        if sids and self._on_change is not None:
            self._on_change(len(self.all()))

    def all(self) -> list[Connection]:
        """Every call not ended, once each."""
        return list(dict.fromkeys(self._by_sid.values()))

    def busy(self) -> bool:
        """Whether the active call holds the line."""
        return self.active is not None and self.active.state in _LINE_HELD

    def current(self) -> Connection | None:
        """The active call, else the first pending incoming call, else None."""
        if self.active is not None:
            return self.active
        for conn in self._by_sid.values():
            if conn.state is CallState.PENDING:
                return conn
        return None

    def unconfirmed_outgoing(self) -> Connection | None:
        """The outgoing call still known only by its temporary ``TJS`` id."""
        for conn in self._by_sid.values():
            if (
                conn.direction is CallDirection.OUTGOING
                and conn.call_sid.startswith("TJS")
                and conn.state in (CallState.CONNECTING, CallState.RINGING)
            ):
                return conn
        return None
