"""Start the local exchange in its own process (the demo and the benchmarks).

The child prints one line with its ``ws://`` URL once bound (``--listen
127.0.0.1:0`` picks a free port); anything else means it failed to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from appliance.cli import API_SECRET_ENV
from appliance.errors import ApplianceError

__all__ = ["start_exchange_process", "stop_process"]


async def start_exchange_process(
    account_sid: str, api_key: str, api_secret: str, *, start_timeout_s: float = 15.0
) -> tuple[asyncio.subprocess.Process, str]:
    """Run ``appliance exchange`` on 127.0.0.1 with one API key.

    Returns:
        The process (terminate it when done) and its signaling URL.

    Raises:
        ApplianceError: it exited or printed something else instead of its URL.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "exchange",
        "--listen",
        "127.0.0.1:0",
        "--account-sid",
        account_sid,
        "--api-key",
        api_key,
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        # The secret goes through the environment, which only this user can
        # read; a command line is visible to every user in ps.
        env={**os.environ, API_SECRET_ENV: api_secret},
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), start_timeout_s)
    except TimeoutError:
        line = b""
    text = line.decode(errors="replace").strip()
    if "ws://" not in text:
        await stop_process(proc, grace_s=0.0)
        raise ApplianceError(f"the exchange did not start: {text!r}")
    return proc, text[text.index("ws://") :]


async def stop_process(
    proc: asyncio.subprocess.Process, *, grace_s: float = 5.0
) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; returns the exit status.

    A child that already exited is only reaped: once asyncio has seen it
    exit, signalling it raises ProcessLookupError (and the PID may belong to
    someone else by then), so ``returncode`` is checked first.
    """
    if proc.returncode is None and grace_s > 0:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(proc.wait(), grace_s)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return await proc.wait()
