"""A small Chrome DevTools Protocol client: Debian's headless chromium driven
over its WebSocket with the ``websockets`` package (no browser download, no
WebDriver). Enough to load pages, read and fill them, and click."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from appliance_dev.exchange_process import stop_process
from tests.conftest import scaled

FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]


class Connection:
    """The browser's DevTools WebSocket: requests matched to answers by id."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def send(self, method: str, session: str = "", **params: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[ident] = future
        payload: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            payload["sessionId"] = session
        await self._ws.send(json.dumps(payload))
        message = await asyncio.wait_for(future, scaled(15))
        if "error" in message:
            raise AssertionError(f"{method}: {message['error']}")
        return message["result"]

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab, attached in flat mode (commands carry its session id)."""

    def __init__(self, connection: Connection, session: str) -> None:
        self._connection = connection
        self._session = session

    async def send(self, method: str, **params: Any) -> Any:
        return await self._connection.send(method, self._session, **params)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, limit_s: float = 10.0) -> Any:
        """Poll ``expression`` until truthy (pages load on their own time)."""
        async with asyncio.timeout(scaled(limit_s)):
            while True:
                with contextlib.suppress(AssertionError):  # mid-navigation
                    value = await self.evaluate(expression)
                    if value:
                        return value
                await asyncio.sleep(0.05)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href.startsWith({json.dumps(url.split('?')[0])}) "
            "|| location.pathname === '/login'"
        )
        await self.wait_for("document.readyState === 'complete'")

    async def fill(self, selector: str, value: str) -> None:
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        await self.evaluate(
            f"document.querySelector({json.dumps(selector)}).value = "
            f"{json.dumps(value)}"
        )

    async def click_and_load(self, selector: str, then: str) -> None:
        """Click (submitting a form) and wait until ``then`` holds on the new page."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        await self.wait_for(then)

    async def text(self, selector: str) -> str:
        return str(
            await self.wait_for(
                f"document.querySelector({json.dumps(selector)})?.innerText"
            )
        )


@contextlib.asynccontextmanager
async def chromium(*extra_flags: str) -> AsyncIterator[Page]:
    """Start headless chromium in a new profile; yield a blank page."""
    binary = shutil.which("chromium")
    assert binary, (
        "chromium missing: apt-get install chromium (image/packages-build.txt)"
    )
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            *extra_flags,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            async with asyncio.timeout(scaled(30)):
                while (  # noqa: ASYNC110  # chromium writes a file, no event
                    not port_file.exists()
                    or len(port_file.read_text().splitlines()) < 2
                ):
                    await asyncio.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            async with websockets.connect(
                f"ws://127.0.0.1:{port}{path}", max_size=None
            ) as ws:
                browser = Connection(ws)
                try:
                    target = await browser.send(
                        "Target.createTarget", url="about:blank"
                    )
                    attached = await browser.send(
                        "Target.attachToTarget",
                        targetId=target["targetId"],
                        flatten=True,
                    )
                    yield Page(browser, attached["sessionId"])
                finally:
                    # A clean exit ends every child process before the
                    # profile directory is removed.
                    with contextlib.suppress(
                        AssertionError, TimeoutError, websockets.ConnectionClosed
                    ):
                        await browser.send("Browser.close")
                    await browser.close()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), scaled(10))
        finally:
            await stop_process(process, grace_s=scaled(5))
