"""A hostile provisioner on 127.0.0.1: every bad answer is a logged error with
its code, the phone retries with growing delays and never crashes, and the
credential file it holds stays byte for byte what it was."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from pathlib import Path

import pytest

from appliance.provisioning import flow as flow_module
from appliance.provisioning import phone as phone_module
from appliance.provisioning.credential import StoredCredential, save_credential
from appliance.provisioning.flow import Phase, PhoneFlow
from appliance.provisioning.phone import PhoneProvisioning
from tests.conftest import scaled, wait_until

#: (mode, the code the phone must log for it); "good" ends the test.
MODES = [
    ("not_json", 31400),
    ("huge", 31400),
    ("wrong_types", 31400),
    ("not_object", 31400),
    ("http_500", 20500),
    ("closed", 31009),
    ("slow", 31003),
    ("good", 0),
]


class HostileProvisioner:
    """Answers the n-th request as ``MODES[n]`` says, at the HTTP byte level."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, float]] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            path = head.split(b" ", 2)[1].decode()
            loop = asyncio.get_running_loop()
            mode = MODES[min(len(self.requests), len(MODES) - 1)][0]
            self.requests.append((path, loop.time()))
            if mode == "closed":
                return
            if mode == "slow":
                await reader.read()  # no answer until the phone gives up
                return
            status, body = 200, b""
            if mode == "not_json":
                body = b"<html>Welcome to nginx!</html>"
            elif mode == "huge":
                body = b'{"token": "' + b"x" * (128 * 1024) + b'"}'
            elif mode == "wrong_types":
                body = json.dumps({"token": 5, "identity": ["a"], "ttl": "1h"}).encode()
            elif mode == "not_object":
                body = b'["token"]'
            elif mode == "http_500":
                status, body = 500, b'{"error": "boom"}'
            elif mode == "good":
                body = json.dumps(
                    {"token": "tok", "identity": "alice", "ttl": 3600}
                ).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_bad_answers_are_coded_retried_and_keep_the_credential(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    # Short delays so that the whole backoff ladder fits in a test.
    monkeypatch.setattr(flow_module, "BACKOFF_MIN_S", 0.05)
    monkeypatch.setattr(phone_module, "REQUEST_TIMEOUT_S", scaled(2.0))
    caplog.set_level(logging.WARNING, "appliance.provisioning.phone")
    hostile = HostileProvisioner()
    await hostile.start()
    credential_file = tmp_path / "phone" / "credential"
    save_credential(
        credential_file,
        StoredCredential("PH" + "0" * 32 + ".secret", "alice", hostile.url),
    )
    before = credential_file.read_bytes()
    tokens: list[str] = []

    async def apply(token: str) -> None:
        tokens.append(token)

    phone = PhoneProvisioning(
        hostile.url,
        credential_file,
        apply_token=apply,
        show=lambda _view: None,
        status=lambda _line: None,
        flow=PhoneFlow(jitter=lambda: 0.0),  # each delay exactly half its step
    )
    task = asyncio.get_running_loop().create_task(phone.run())
    try:
        await wait_until(lambda: tokens, 30.0)
        assert not task.done()
        assert tokens == ["tok"] and phone.phase is Phase.READY
        assert [path for path, _ in hostile.requests] == ["/api/token"] * len(MODES)
        # One error line per bad answer, each with its code.
        failures = [r for r in caplog.records if r.getMessage().startswith("no token")]
        assert len(failures) == len(MODES) - 1
        for (mode, code), record in zip(MODES, failures, strict=False):
            assert f"error {code}:" in record.getMessage(), (mode, record)
        assert "secret" not in caplog.text
        # Backoff: the n-th retry waits at least 0.05 * 2**(n-1) / 2 s.
        times = [at for _, at in hostile.requests]
        for n, (earlier, later) in enumerate(itertools.pairwise(times)):
            assert later - earlier >= 0.025 * 2**n - 0.005, (n, times)
        assert credential_file.read_bytes() == before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hostile.stop()
