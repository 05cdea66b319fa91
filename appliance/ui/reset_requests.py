"""Who waits for the panel's answer to "Reset provisioning?", and the reset.

``appliance provision reset`` asks the panel over the control socket and
waits; the person at the desk answers with a long press of Hangup (or lets
it lapse). The waiting callers, the handler that forgets the credential and
the outcome they all get are this small adapter, kept apart from
:mod:`appliance.ui.controller`, which shows the prompt and feeds the panel;
the prompt's timing is the pure :mod:`appliance.ui.reset_confirm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from appliance.errors import ApplianceError

__all__ = ["ResetRequests"]

logger = logging.getLogger(__name__)


class ResetRequests:
    """The reset handler and the callers waiting for the panel's answer.

    Outcomes: ``"reset"`` (confirmed and done), ``"cancelled"`` and
    ``"failed"`` (confirmed, but the handler raised or there is none).
    """

    def __init__(self) -> None:
        #: Forgets the credential once the long press confirmed it.
        self.handler: Callable[[], Awaitable[object]] | None = None
        self._waiters: list[asyncio.Future[str]] = []

    @contextlib.contextmanager
    def waiting(self) -> Iterator[asyncio.Future[str]]:
        """A future for the next outcome, forgotten when the block ends."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            yield waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def answer(self, outcome: str) -> None:
        """Tell every waiting caller ``outcome``."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(outcome)

    async def run(self, failed: Callable[[ApplianceError], None]) -> None:
        """Reset (the panel confirmed it), then answer; ``failed`` shows why not."""
        outcome = "failed"
        try:
            if self.handler is not None:
                await self.handler()
                outcome = "reset"
        except ApplianceError as exc:
            logger.error("provisioning reset failed: %s", exc)
            failed(exc)
        finally:
            self.answer(outcome)
