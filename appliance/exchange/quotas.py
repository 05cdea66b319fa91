"""Capacity limits of the exchange: how many of each thing one party may hold.

Why: nothing capped sessions per account, nor echo calls (each one a media
session worth about a tenth of a core), so one client could exhaust the
exchange for everybody. Each limit here has a config key (``[exchange]`` in
the exchange's TOML file, :mod:`appliance.exchange.config`), is answered with
Twilio's 31206 (Rate exceeded) and a message naming the limit, and is logged
once per party that reaches it (:class:`QuotaLog`), not once per refusal.

========================  =======  ==========================================
key                       default  refused
========================  =======  ==========================================
max_sessions_per_account  10000    ``listen``: error 31206, then ``close``
max_sessions_per_identity 20       ``listen``: error 31206, then ``close``
max_calls_per_session     4        ``invite``: hangup 31206
max_echo_calls            8        ``invite`` to echo: hangup 31206
max_pending_per_address   64       a new socket from an address already
                                   holding this many sockets that have not
                                   sent a good ``listen``: error 31206, closed
========================  =======  ==========================================

Pure: no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

__all__ = ["QUOTA_CODE", "QuotaLog", "Quotas"]

logger = logging.getLogger(__name__)

#: Twilio's "Rate exceeded", used for every capacity refusal.
QUOTA_CODE = 31206


@dataclass(frozen=True)
class Quotas:
    """The limits (see the module docstring); each must be at least 1."""

    max_sessions_per_account: int = 10000
    max_sessions_per_identity: int = 20
    max_calls_per_session: int = 4
    max_echo_calls: int = 8
    max_pending_per_address: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a whole number >= 1")

    def message(self, key: str) -> str:
        """The client-facing text for limit ``key``."""
        what = key.removeprefix("max_").replace("_", " ")
        return f"Rate exceeded: {what} limit ({getattr(self, key)}) reached"


class QuotaLog:
    """Logs a limit the first time each party reaches it, and counts every hit.

    ``hits`` maps each limit key to the number of refusals, for tests and
    status displays. At most ``max_parties`` parties are remembered per limit;
    beyond that nothing more is logged for it (counting goes on).
    """

    def __init__(self, max_parties: int = 1000) -> None:
        self.hits: dict[str, int] = {}
        self._logged: dict[str, set[str]] = {}
        self._max_parties = max_parties

    def reached(self, key: str, party: str, limit: int) -> None:
        """Limit ``key`` (value ``limit``) refused something of ``party``."""
        self.hits[key] = self.hits.get(key, 0) + 1
        logged = self._logged.setdefault(key, set())
        if party in logged or len(logged) >= self._max_parties:
            return
        logged.add(party)
        logger.warning(
            "limit %s = %d reached by %s; refused with %d (logged once per party)",
            key,
            limit,
            party,
            QUOTA_CODE,
        )
