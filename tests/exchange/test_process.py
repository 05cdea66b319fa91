"""start_exchange_process: a real exchange process, or a clear error."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from appliance.errors import ApplianceError
from appliance_dev.exchange_process import start_exchange_process, stop_process
from tests.conftest import ACCOUNT_SID, API_KEY, API_SECRET


async def test_starts_and_reports_its_url():
    proc, url = await start_exchange_process(ACCOUNT_SID, API_KEY, API_SECRET)
    try:
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/signal")
        assert proc.returncode is None
    finally:
        proc.terminate()
        assert await proc.wait() == 0


async def test_bad_credentials_are_an_error_not_a_hang():
    with pytest.raises(ApplianceError, match="did not start"):
        await start_exchange_process("not-an-account", API_KEY, API_SECRET)


async def test_stopping_a_process_that_already_exited_only_reaps_it():
    # Once asyncio has reaped a child, signalling it raises ProcessLookupError;
    # the exchange's own failure path hit exactly that when it exited early.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "raise SystemExit(3)"
    )
    assert await proc.wait() == 3
    await asyncio.sleep(0.05)  # let the transport close its pipes as well
    assert await stop_process(proc) == 3
    assert await stop_process(proc, grace_s=0.0) == 3


async def test_stop_process_kills_a_child_that_ignores_sigterm():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout = proc.stdout  # a pipe: stdout=PIPE above
    assert (await stdout.readline()).strip() == b"armed"  # type: ignore[union-attr]
    assert await stop_process(proc, grace_s=0.2) == -signal.SIGKILL
