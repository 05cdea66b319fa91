"""CallLogRecorder on real Devices: a connected call keeps its codec, MOS,
jitter and loss from the engine's media stats (real aiortc over 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.calllog.core import Direction
from appliance.calllog.recorder import CallLogRecorder
from appliance.calllog.store import CallLogStore
from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from tests.conftest import local_device, make_token, wait_until

pytestmark = pytest.mark.slow  # real aiortc

#: What the engine negotiates (media/codecs.py); "-" on the page when unknown.
CODECS = {"opus", "pcmu", "pcma", "PCMU", "PCMA"}


async def test_a_connected_call_keeps_its_quality_figures(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    bob = local_device(exchange.url, input_device="tone:440")
    carol = local_device(exchange.url, input_device="tone:660")
    offered: list[Connection] = []
    bob.on("incoming", offered.append)
    try:
        await bob.setup(make_token("bob"))
        await carol.setup(make_token("carol"))
        async with CallLogRecorder(
            bob, CallLogStore(db), clock_known=lambda: True
        ) as log:
            call = await carol.connect({"To": "client:bob"})
            await wait_until(lambda: len(offered) == 1, 10.0)
            await offered[0].accept()
            # One stats sample (1 s) with packets received.
            await wait_until(lambda: offered[0].loss_percent is not None, 15.0)
            await call.disconnect()
            await wait_until(lambda: len(log.entries()) == 1, 10.0)
            [entry] = log.entries()
    finally:
        await carol.destroy()
        await bob.destroy()
    assert entry.direction is Direction.INCOMING
    assert entry.codec in CODECS, entry.codec
    assert entry.mos is not None and 1.0 <= entry.mos <= 4.5
    assert entry.jitter_ms is not None and 0.0 <= entry.jitter_ms < 1000.0
    assert entry.loss_percent is not None and 0.0 <= entry.loss_percent <= 100.0
    # Kept on disk with the same figures.
    assert CallLogStore(db).recent() == [entry]
