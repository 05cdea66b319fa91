"""How long the garbage collector stops the phone in a call: full passes with
and without the start-up heap frozen (appliance/system/heap.py).

Each side runs in a fresh interpreter that loads what ``appliance run`` loads
(the composition root, the engine with aiortc and PyAV, the panel's call log,
the web page), registers two phones with an exchange process and puts a call
up between them; one side freezes its heap once the phones are up, as the
service does, the other (the anchor: the service before the freeze) does
not. Mid-call, each times full collections (``gc.collect()``, generation 2).
A full pass stops the event loop that feeds the speaker, and the playback
ring holds 40 ms: a longer pass is an audible gap.

Run alone: ``.venv/bin/python bench/gc_bench.py``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

PASSES = 15


async def _child(freeze: bool) -> dict[str, Any]:
    import gc

    from call_bench import Credentials, start_exchange, stop

    from appliance.app import build_device
    from appliance.phone.options import parse_options
    from appliance.system.heap import freeze_startup_heap
    from appliance.ui import desk  # noqa: F401  (the service loads them all)
    from appliance.web import server  # noqa: F401

    creds = Credentials.fresh()
    proc, url = await start_exchange(creds)
    common = {"signaling_url": url, "local_addresses": ["127.0.0.1"]}
    alice = build_device(
        parse_options({"input_device": "tone:440", "output_device": "null", **common})
    )
    bob = build_device(
        parse_options({"input_device": "tone:660", "output_device": "null", **common})
    )
    accepted = asyncio.Event()

    async def answer(conn: Any) -> None:
        await conn.accept()
        accepted.set()

    bob.on("incoming", answer)
    times: list[float] = []
    try:
        await alice.setup(creds.token("alice"))
        await bob.setup(creds.token("bob"))
        if freeze:
            freeze_startup_heap()
        conn = await alice.connect({"To": "bob"})
        await asyncio.wait_for(accepted.wait(), 10)
        await asyncio.sleep(1.0)  # media flowing, jitter buffers filled
        gc.collect()
        objects = len(gc.get_objects())
        for _ in range(PASSES):
            start = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.1)
        await conn.disconnect()
    finally:
        await alice.destroy()
        await bob.destroy()
        await stop(proc)
    return {"objects": objects, "ms": times}


def _side(freeze: bool) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "frozen" if freeze else "loaded"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def run() -> dict[str, Any]:
    """Both sides in one run, each in a fresh interpreter."""
    return {"loaded": _side(False), "frozen": _side(True)}


def render(data: dict[str, Any]) -> str:
    def row(what: str, side: dict[str, Any]) -> str:
        ms = side["ms"]
        return (
            f"| {what} | {side['objects']} | {statistics.median(ms):.1f} ms "
            f"| {max(ms):.1f} ms |"
        )

    return f"""
## Collector pauses in a call (full passes, {PASSES} each)

| phone process | objects the pass visits | median | max |
|---|---|---|---|
{row("start-up heap not frozen (anchor)", data["loaded"])}
{row("start-up heap frozen (the service)", data["frozen"])}

A full pass stops the whole interpreter, the event loop that feeds the
speaker included, and the playback ring holds 40 ms. The service freezes its
start-up heap once it is up (appliance/system/heap.py), so a pass visits only
what the calls made. Each row is a fresh process with two registered phones
in a call through an exchange process; `bench/gc_bench.py`, run by
`make bench`.
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(asyncio.run(_child(sys.argv[2] == "frozen"))))
    else:
        print(render(run()))
