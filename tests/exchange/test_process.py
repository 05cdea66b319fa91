"""start_exchange_process: a real exchange process, or a clear error."""

from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.exchange.process import start_exchange_process
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
