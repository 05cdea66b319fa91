"""Provisioning timings: power-on to registered, and the token round trip.

``python bench/provisioning_bench.py [--runs N]`` starts a local exchange and
a provisioner (processes on 127.0.0.1), then N times a fresh phone service
(``appliance run``, no front panel) with an empty credential directory, and
approves its code through the admin API as soon as it appears. It prints:

* start -> code: service start until the provisioner has its device code
  (what the OLED shows as a QR code);
* approve -> registered: approval until the service reports "registered"
  (one poll interval, 1 s here, at most, plus credential, token and setup);
* token round trip: ``POST /api/token`` with a device credential until the
  Access Token is back (scrypt check, minting, database write).

A measurement, not a test: it never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from appliance.provisioning.grant import hash_secret
from appliance_dev.exchange_process import start_exchange_process, stop_process

ACCOUNT = "AC" + secrets.token_hex(16)
KEY = "SK" + secrets.token_hex(16)
SECRET = secrets.token_hex(16)
PASSWORD = secrets.token_urlsafe(16)


def write_private(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(0o600)


async def start_provisioner(work: Path) -> tuple[asyncio.subprocess.Process, str]:
    write_private(work / "api-secret", SECRET)
    write_private(work / "admin-hash", hash_secret(PASSWORD))
    (work / "provisioner.toml").write_text(
        f"""
[provisioner]
listen = "127.0.0.1:0"
database = "phones.db"
poll_interval = 1

[twilio]
account_sid = "{ACCOUNT}"
api_key_sid = "{KEY}"
api_key_secret_file = "api-secret"

[admin]
password_hash_file = "admin-hash"
"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "provisioner",
        "serve",
        "--config",
        str(work / "provisioner.toml"),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return proc, line.split("listening on ", 1)[1].strip()


async def one_phone(
    work: Path, exchange_url: str, url: str, http: aiohttp.ClientSession, csrf: str
) -> tuple[float, float]:
    phone = Path(tempfile.mkdtemp(dir=work))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(phone / "notify"))
    notify.setblocking(False)
    (phone / "appliance.toml").write_text(
        f"""
[phone]
provisioner_url = "{url}"
credential_file = "{phone / "credential"}"

[device]
signaling_url = "{exchange_url}"
local_addresses = ["127.0.0.1"]

[log]
level = "warning"
"""
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(phone / "notify")}
    env.pop("APPLIANCE_TOKEN", None)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "run",
        "--config",
        str(phone / "appliance.toml"),
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    try:
        while True:
            async with http.get(f"{url}/api/admin/pending") as response:
                pending = await response.json()
            if pending:
                break
            await asyncio.sleep(0.01)
        got_code = approved = time.perf_counter()
        async with http.post(
            f"{url}/api/admin/approve",
            json={"user_code": pending[0]["user_code"], "identity": phone.name},
            headers={"X-CSRF-Token": csrf},
        ) as response:
            assert response.status == 200
        while True:
            notice = (await loop.sock_recv(notify, 4096)).decode()
            if "registered as" in notice:
                break
        registered = time.perf_counter()
    finally:
        await stop_process(proc, grace_s=10)
        notify.close()
    return got_code - start, registered - approved


async def token_round_trips(
    url: str, http: aiohttp.ClientSession, credential: str, n: int
) -> list[float]:
    """``n`` token requests with one phone's device credential, timed."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with http.post(
            f"{url}/api/token", headers={"Authorization": f"Bearer {credential}"}
        ) as response:
            assert response.status == 200, await response.text()
            await response.json()
        times.append(time.perf_counter() - start)
    return times


def first_credential(work: Path) -> str:
    """The device credential of one enrolled phone, from its file."""
    path = next(work.glob("*/credential"))
    return str(json.loads(path.read_text())["credential"])


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="prov-bench-") as tmp:
        work = Path(tmp)
        exchange, exchange_url = await start_exchange_process(ACCOUNT, KEY, SECRET)
        provisioner, url = await start_provisioner(work)
        try:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.post(
                    f"{url}/api/admin/login", json={"password": PASSWORD}
                ) as response:
                    csrf = (await response.json())["csrf"]
                codes, registrations = [], []
                for _ in range(runs):
                    code, registered = await one_phone(
                        work, exchange_url, url, http, csrf
                    )
                    codes.append(code)
                    registrations.append(registered)
                credential = await asyncio.to_thread(first_credential, work)
                trips = await token_round_trips(url, http, credential, 20)
        finally:
            await stop_process(provisioner, grace_s=10)
            await stop_process(exchange, grace_s=10)

    def show(name: str, values: list[float]) -> None:
        ms = sorted(v * 1000 for v in values)
        print(
            f"{name:<28} median {statistics.median(ms):7.0f} ms   "
            f"max {ms[-1]:7.0f} ms   (n={len(ms)})"
        )

    show("start -> code", codes)
    show("approve -> registered", registrations)
    show("token round trip", trips)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
