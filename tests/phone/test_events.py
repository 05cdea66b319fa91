"""The Device/Connection event emitter: order, once, off, and handler failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.events import Emitter


def test_handlers_run_in_order_and_off_and_once_work():
    events = Emitter(frozenset({"ready", "error"}))
    seen: list[str] = []

    def first(name: str) -> None:
        seen.append(f"first {name}")

    events.on("ready", first)
    events.once("ready", lambda name: seen.append(f"once {name}"))
    events.on("ready", lambda name: seen.append(f"last {name}"))
    events.emit("ready", "a")
    events.off("ready", first)
    events.off("ready", first)  # no longer there: no error
    events.emit("ready", "b")
    assert seen == ["first a", "once a", "last a", "last b"]
    assert events.listener_count("ready") == 1
    with pytest.raises(ValueError, match="unknown event 'readdy'"):
        events.on("readdy", first)
    events.emit("error", RuntimeError("x"))  # an error nobody listens to is a fact


async def test_a_failing_handler_is_logged_and_the_others_still_run(caplog):
    events = Emitter(frozenset({"incoming"}))
    seen: list[str] = []
    done = asyncio.Event()

    def broken(_call: str) -> None:
        raise RuntimeError("handler bug")

    async def slow(call: str) -> None:
        await asyncio.sleep(0.01)  # a handler that takes a while
        seen.append(f"async {call}")
        done.set()

    async def broken_async(_call: str) -> None:
        raise RuntimeError("async handler bug")

    events.on("incoming", broken)
    events.on("incoming", slow)
    events.on("incoming", broken_async)
    events.on("incoming", seen.append)
    with caplog.at_level(logging.ERROR, logger="appliance.events"):
        events.emit("incoming", "CA1")
        assert seen == ["CA1"]  # the plain handler after the broken one ran
        await events.drain()
    assert done.is_set() and seen == ["CA1", "async CA1"]
    messages = " ".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "handler bug" in messages and "async handler bug" in messages
