"""The echo destination's media (aiortc) is imported when the exchange starts.

Importing aiortc and PyAV takes seconds on a Pi; done on the first echo call,
it made that call take over 2 s to answer. The check runs in a fresh
interpreter (a real child process), where nothing has imported aiortc yet.
The time the first echo call takes is a benchmark figure
(bench/exchange_bench.py, docs/exchange-benchmarks.md), not a test.
"""

from __future__ import annotations

import asyncio
import sys

from tests.conftest import scaled

PROGRAM = """
import asyncio, sys
from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.tokens import Keyring

async def main():
    keyring = Keyring()
    keyring.add_api_key("AC" + "1" * 32, "SK" + "2" * 32, "x" * 32)
    before = "aiortc" in sys.modules
    async with ExchangeServer(ExchangeConfig(keyring=keyring)) as server:
        listening = server.port > 0
        loaded = await server.echo_media_loaded()
        print(before, listening, loaded, "aiortc" in sys.modules)

asyncio.run(main())
"""


async def test_exchange_imports_aiortc_at_start_not_on_the_first_echo_call():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROGRAM,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), scaled(60))
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["False", "True", "True", "True"]
