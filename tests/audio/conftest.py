"""Shared parts of the tests that run phones on the virtual sound cards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance_dev.rig import VirtualCards


@pytest.fixture(scope="module")
def rig() -> Iterator[VirtualCards]:
    """Virtual cards for phones A and B, installed as this process's ALSA config."""
    cards = VirtualCards(["A", "B"]).start()
    try:
        cards.install()
        yield cards
    finally:
        cards.stop()
