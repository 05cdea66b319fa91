"""Shared fixtures: exchange credentials, tokens, an exchange in-process or as a
subprocess, and phones (``python -m appliance phone``) as subprocesses.

Everything listens on 127.0.0.1 only. Waits are event-driven; their limits are
multiplied by ``APPLIANCE_TEST_TIMEOUT_FACTOR`` (default 1) for slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.phone.device import Device
from appliance.tokens import Keyring, create_access_token
from appliance_dev.exchange_process import stop_process
from appliance_dev.rig import VirtualCards
from appliance_dev.unit_file import run_as_unit

TIMEOUT_FACTOR = float(os.environ.get("APPLIANCE_TEST_TIMEOUT_FACTOR", "1"))

ACCOUNT_SID = "AC" + "1" * 32
API_KEY = "SK" + "2" * 32
# Twilio secrets are 32 characters; a shorter one would make PyJWT warn.
API_SECRET = "x" * 32
APP_SID = "AP" + "3" * 32
CREDENTIALS = ["--account-sid", ACCOUNT_SID, "--api-key", API_KEY]
#: The API secret reaches an exchange process through its environment (a
#: command line is visible to every user).
SECRET_ENV = {"APPLIANCE_API_SECRET": API_SECRET}

#: Ring timeout of the exchanges started here: short, so that an ignored call
#: ends (31480) quickly, yet far longer than an accept takes on loopback.
RING_TIMEOUT_S = 2.0 * TIMEOUT_FACTOR


def pytest_configure(config: pytest.Config) -> None:
    """Run the phone's code at the priority the unit gives it (Nice=), before
    any thread starts; the phone, exchange and rig processes inherit it."""
    if not run_as_unit():
        config.issue_config_time_warning(
            pytest.PytestWarning(
                "cannot take the unit's nice value (needs root or RLIMIT_NICE): "
                "audio tests may break on a busy machine"
            ),
            stacklevel=1,
        )


#: Tests between two full collections of the runner's own garbage.
COLLECT_EVERY = 25
_tests_run = 0


@pytest.fixture(autouse=True)
def quiet_collector() -> Iterator[None]:
    """Freeze the runner's heap for the length of each test.

    The phones under test run in this process, whose heap is the test
    runner's: modules, fixtures and reports of every test so far, some
    150 000 objects, where one full collection pass took 100-470 ms with two
    CPU burners beside it, long enough for a playback underrun in the middle
    of a call. The service freezes its own start-up heap for the same reason
    (appliance/system/heap.py); here each test starts with everything before
    it frozen, and the earlier tests' garbage is collected between tests.
    """
    global _tests_run
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        _tests_run += 1
        if _tests_run % COLLECT_EVERY == 0:
            gc.collect()


def scaled(seconds: float) -> float:
    """A wait limit adjusted for the machine (``APPLIANCE_TEST_TIMEOUT_FACTOR``)."""
    return seconds * TIMEOUT_FACTOR


async def wait_until(predicate: Callable[[], object], limit_s: float = 5.0) -> None:
    """Poll ``predicate`` until true: pin levels, call states and files have no
    event to await. Fails the test after ``limit_s`` (scaled for the machine).
    """
    try:
        async with asyncio.timeout(scaled(limit_s)):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        try:  # the line with the lambda says more than its repr
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = repr(predicate)
        raise AssertionError(f"not true within {limit_s} s: {what}") from None


def local_device(signaling_url: str, *args: Any, **options: Any) -> Device:
    """A Device on ``signaling_url`` that gathers ICE only on 127.0.0.1.

    With no ICE servers configured (the default), so a test never sends to
    another address.
    """
    return Device(
        *args, signaling_url=signaling_url, local_addresses=["127.0.0.1"], **options
    )


def make_token(
    identity: str,
    *,
    ttl: int = 3600,
    secret: str = API_SECRET,
    now: float | None = None,
    incoming: bool = True,
    outgoing: bool = True,
) -> str:
    """An Access Token for ``identity`` that the test exchanges accept."""
    return create_access_token(
        account_sid=ACCOUNT_SID,
        api_key_sid=API_KEY,
        api_secret=secret,
        identity=identity,
        ttl=ttl,
        now=time.time() if now is None else now,
        outgoing_application_sid=APP_SID if outgoing else None,
        incoming_allow=incoming,
    )


@pytest.fixture
def token_factory() -> Callable[..., str]:
    """``token_factory(identity, ttl=..., secret=..., now=...)`` mints a token."""
    return make_token


def new_keyring() -> Keyring:
    """The keyring of every test exchange."""
    keyring = Keyring()
    keyring.add_api_key(ACCOUNT_SID, API_KEY, API_SECRET)
    return keyring


@pytest.fixture
async def exchange() -> AsyncIterator[ExchangeServer]:
    """An in-process exchange on 127.0.0.1 with a short ring timeout."""
    config = ExchangeConfig(
        keyring=new_keyring(), host="127.0.0.1", port=0, ring_timeout=RING_TIMEOUT_S
    )
    async with ExchangeServer(config) as server:
        yield server


# ---------------------------------------------------------------- processes


async def _read_lines(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace"))


@dataclass
class ExchangeProcess:
    """``python -m appliance exchange`` running as a child process."""

    process: asyncio.subprocess.Process
    port: int
    stderr: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/signal"

    async def kill(self) -> None:
        """SIGKILL: no close frames, sockets reset by the kernel."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), scaled(5))
            except TimeoutError:
                self.process.kill()
        await self.kill()


async def start_exchange_process(port: int = 0, *extra: str) -> ExchangeProcess:
    """Start the exchange CLI; return once it printed its bound URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "exchange",
        "--listen",
        f"127.0.0.1:{port}",
        *CREDENTIALS,
        "--ring-timeout",
        str(RING_TIMEOUT_S),
        "--log-level",
        "WARNING",
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRET_ENV},
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    drain = asyncio.get_running_loop().create_task(_read_lines(process.stderr, stderr))
    try:
        line = await asyncio.wait_for(process.stdout.readline(), scaled(15))
    except TimeoutError:
        await stop_process(process, grace_s=0.0)
        raise AssertionError(f"exchange did not start: {''.join(stderr)}") from None
    text = line.decode().strip()
    if not text.startswith("exchange listening on ws://"):
        await stop_process(process, grace_s=0.0)
        await asyncio.gather(drain, return_exceptions=True)
        raise AssertionError(f"exchange failed: {text!r} {''.join(stderr)}")
    bound = int(text.rsplit(":", 1)[1].split("/", 1)[0])
    return ExchangeProcess(process, bound, stderr, drain)


@pytest.fixture
async def exchange_process() -> AsyncIterator[
    Callable[..., Awaitable[ExchangeProcess]]
]:
    """``await exchange_process(port=0)`` starts an exchange subprocess.

    Every process started through it is stopped at teardown.
    """
    started: list[ExchangeProcess] = []

    async def start(port: int = 0, *extra: str) -> ExchangeProcess:
        proc = await start_exchange_process(port, *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.stop()


class PhoneProcess:
    """``python -m appliance phone``: JSON commands in, JSON events out.

    Every line read is kept in :attr:`lines`; :meth:`expect` returns the
    earliest matching line not yet returned, so a test can take events of one
    kind in order while lines of other kinds wait for their own ``expect``.
    """

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        assert process.stdout is not None and process.stderr is not None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(process.stdout)),
            loop.create_task(_read_lines(process.stderr, self.stderr)),
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                # stdout is the JSON stream; anything else is a bug there.
                self.lines.append({"event": "<not json>", "text": line.decode()})
            self._changed.set()
        self._changed.set()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every event read so far (of one name, if given)."""
        return [
            e
            for e in self.lines
            if "event" in e and (name is None or e["event"] == name)
        ]

    async def send(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply."""
        stdin = self.process.stdin  # a pipe: stdin=PIPE in start_phone_process
        stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())  # type: ignore[union-attr]
        await stdin.drain()  # type: ignore[union-attr]
        return await self.expect(reply=cmd)

    async def expect(
        self,
        event: str | None = None,
        *,
        reply: str | None = None,
        within: float = 5.0,
        **match: Any,
    ) -> dict[str, Any]:
        """Wait for the next line with this event (or reply) and field values."""
        limit = asyncio.get_running_loop().time() + scaled(within)
        while True:
            for index, line in enumerate(self.lines):
                if index not in self._taken and (
                    (event is None or line.get("event") == event)
                    and (reply is None or line.get("reply") == reply)
                    and all(line.get(k) == v for k, v in match.items())
                ):
                    self._taken.add(index)
                    return line
            remaining = limit - asyncio.get_running_loop().time()
            if remaining <= 0 or self.process.returncode is not None:
                raise AssertionError(
                    f"{self.name}: no {event or reply} {match} within {within} s; "
                    f"read {self.lines}; "
                    f"stderr {''.join(self.stderr)[-2000:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def quit(self) -> int:
        """Ask the agent to quit (it destroys its Device); kill it if it hangs."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(b'{"cmd": "quit"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), scaled(10))
            except TimeoutError:
                self.process.kill()
        code = await self.process.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return code


async def start_phone_process(
    name: str, url: str, token: str | None, *args: str
) -> PhoneProcess:
    """Start a phone agent; ``args`` are extra ``appliance phone`` options.

    With ``token`` None, ``args`` must give ``--token-file``.
    """
    # The token goes through the environment: a command line is visible to
    # every user in ps.
    env = {**os.environ, "APPLIANCE_TOKEN": token} if token is not None else None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "phone",
        "--signaling-url",
        url,
        "--local-address",
        "127.0.0.1",
        "--log-level",
        "WARNING",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return PhoneProcess(name, process)


@pytest.fixture
async def phone_process() -> AsyncIterator[Callable[..., Awaitable[PhoneProcess]]]:
    """``await phone_process(name, url, token, *args)`` starts a phone agent.

    Every agent started through it is told to quit (then killed) at teardown.
    """
    started: list[PhoneProcess] = []

    async def start(name: str, url: str, token: str | None, *args: str) -> PhoneProcess:
        phone = await start_phone_process(name, url, token, *args)
        started.append(phone)
        return phone

    yield start
    for phone in started:
        await phone.quit()


@contextlib.contextmanager
def installed_cards(names: Sequence[str]) -> Iterator[VirtualCards]:
    """The rig's clocked virtual cards, installed as this process's ALSA config."""
    cards = VirtualCards(list(names)).start()
    try:
        cards.install()
        yield cards
    finally:
        cards.stop()


@pytest.fixture(scope="module")
def rig() -> Iterator[VirtualCards]:
    """Virtual cards for phones A and B (a module shares one set)."""
    with installed_cards(["A", "B"]) as cards:
        yield cards
