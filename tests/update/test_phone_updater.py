"""The updater as the service wires it: a real Device in a real call through the
local exchange makes it busy, the call's end makes it idle again; a key keeps
it from installing for ``idle_after_s``; health facts commit a trial."""

from __future__ import annotations

import asyncio

import pytest

from appliance.exchange.server import ExchangeServer
from appliance.update.machine import Phase
from appliance.update.phone_updater import PhoneUpdater
from appliance.update.settings import UpdateConfig
from tests.conftest import local_device, make_token, scaled, wait_until

pytestmark = pytest.mark.slow  # a real aiortc call


def phone_updater(phone, tmp_path) -> tuple[PhoneUpdater, list[tuple[object, ...]]]:
    trust = tmp_path / "update-root.json"
    trust.write_bytes(phone.trust_root)
    config = UpdateConfig(
        url=phone.url,
        trust_root=str(trust),
        root=str(phone.root),
        platform="any",
        stay_up_s=0,  # the loop sleeps in real time; the bound: test_updater.py
    )
    shown: list[tuple[object, ...]] = []

    async def restart() -> None:
        phone.restarts += 1

    updater = PhoneUpdater(
        config, restart=restart, show=lambda *a: shown.append(a), clock=phone.clock
    )
    return updater, shown


async def test_a_call_makes_the_phone_busy_until_it_ends(
    phone, tmp_path, exchange: ExchangeServer
):
    updater, _shown = phone_updater(phone, tmp_path)
    updater.open()
    desk = local_device(exchange.url, input_device="tone:440", output_device="null")
    caller = local_device(exchange.url, input_device="tone:660", output_device="null")
    detach = updater.attach(desk)
    try:
        desk.on("incoming", lambda conn: asyncio.ensure_future(conn.accept()))
        await desk.setup(make_token("desk"))
        await caller.setup(make_token("caller"))
        machine = updater.updater.machine
        assert machine.is_idle(phone.clock())
        call = await caller.connect({"To": "desk"})
        opened = asyncio.Event()
        call.on("accept", lambda _c: opened.set())
        await asyncio.wait_for(opened.wait(), scaled(10))
        assert not machine.is_idle(phone.clock())  # in a call
        await call.disconnect()
        await wait_until(lambda: machine.is_idle(phone.clock()), 10)
        # A key press: not idle for idle_after_s.
        updater.key_pressed()
        assert not machine.is_idle(phone.clock())
        phone.clock.now += 60.0
        assert machine.is_idle(phone.clock())
    finally:
        detach()
        await caller.destroy()
        await desk.destroy()
        updater.close()


async def test_health_facts_commit_a_trial_and_the_panel_is_told(phone, tmp_path):
    first, _ = phone_updater(phone, tmp_path)
    first.open()
    first.updater.check_now()
    await first.updater.run_once()  # downloads, installs, switches, restarts
    first.close()
    assert phone.restarts == 1 and phone.releases.current == "1.1.0"
    updater, shown = phone_updater(phone, tmp_path)  # the service on 1.1.0
    updater.open()
    task = asyncio.ensure_future(updater.run())
    try:
        await wait_until(lambda: shown == [("Starting", "1.1.0", None, "")], 5)
        for fact in ("ready", "registered", "audio"):
            updater.health(fact)
        await wait_until(lambda: shown[-1] == ("", "", None, ""), 5)
        state = updater.updater.machine.state
        assert (state.current, state.previous, state.refused) == ("1.1.0", "1.0.0", ())
        assert state.phase is not Phase.HEALTH_CHECK  # committed (then checks on)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        updater.close()
