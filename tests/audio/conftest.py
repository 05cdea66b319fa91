"""Shared parts of the tests that run phones on the virtual sound cards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from appliance.rig import VirtualCards, timeout_factor

FACTOR = timeout_factor()


@pytest.fixture(scope="module")
def rig() -> Iterator[VirtualCards]:
    """Virtual cards for phones A and B, installed as this process's ALSA config."""
    cards = VirtualCards(["A", "B"]).start()
    try:
        cards.install()
        yield cards
    finally:
        cards.stop()


async def wait_for(predicate: Callable[[], bool], limit_s: float) -> None:
    """Poll ``predicate`` (call states have no event to await) within a limit."""
    deadline = time.monotonic() + limit_s * FACTOR
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
