"""A hostile signaling gateway for fuzzing the phone (issue 12, item 9).

It speaks enough of the protocol (signaling-protocol.md §2) to get a phone
connected and registered, then sends frames made by :class:`FrameFuzzer`:
truncated JSON, wrong types in every field, huge numbers, deep nesting,
unknown types, valid frames with mutated fields, invites with garbage SDP,
answers, cancels and hangups for calls the phone never heard of, and binary
frames. Every frame comes from one seeded :class:`random.Random`, so a failure
reproduces from its seed.

After the storm the gateway can turn into a relay to a real exchange, so the
same phone shows it can still register and place a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from appliance.signaling.messages import MessageType

#: Gateway message types the storm uses. ``close`` is left out on purpose: it
#: is a lawful order to stop until a new token is set, not a malformed frame.
_GATEWAY_TYPES = [t.value for t in MessageType if t is not MessageType.CLOSE]

_GOOD_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\n"
)


def frame(kind: str, payload: Any, version: Any = "") -> str:
    return json.dumps({"type": kind, "version": version, "payload": payload})


class FrameFuzzer:
    """Makes malformed and mutated gateway frames from a seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        #: CallSids of invites sent, so later frames can name live calls.
        self.sids: list[str] = ["CA" + "0" * 32]

    # ---- values ------------------------------------------------------------

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, of any type, sometimes extreme."""
        r = self.rng
        pick = r.randrange(14 if depth < 3 else 10)
        if pick == 0:
            return None
        if pick == 1:
            return r.random() < 0.5
        if pick == 2:
            return r.choice([0, -1, 1, 2**31, -(2**63), 2**64, 10**300, 10**400])
        if pick == 3:
            return r.choice([0.5, -0.0, 1e308, -1e308, 5e-324])
        if pick == 4:
            return ""
        if pick == 5:
            return self.text(r.choice([1, 8, 64, 4096]))
        if pick == 6:
            return r.choice(self.sids)
        if pick == 7:
            return r.choice(["\n", "\x00", "\u202e", "\ud800", "..", "%", "&=&="])
        if pick == 8:
            return "TJS" + self.text(8)
        if pick == 9:
            return r.choice(_GATEWAY_TYPES)
        if pick == 10:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {self.text(4): self.value(depth + 1) for _ in range(r.randrange(4))}

    def text(self, n: int) -> str:
        alphabet = "abcXYZ019 #*+-=&%\\\"'\n\t\u00e9\u4e2d\U0001f4de"
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    # ---- frames ------------------------------------------------------------

    def valid(self) -> tuple[str, dict[str, Any]]:
        """A frame the phone could get from a sane gateway, as (type, payload)."""
        r = self.rng
        sid = r.choice(self.sids) if r.random() < 0.7 else "CA" + self.text(6)
        kind = r.choice(_GATEWAY_TYPES)
        payload: dict[str, Any] = {"callsid": sid}
        if kind == "invite":
            sid = f"CA{r.getrandbits(128):032x}"
            self.sids.append(sid)
            payload = {
                "callsid": sid,
                "sdp": _GOOD_SDP if r.random() < 0.3 else self.text(r.randrange(80)),
                "parameters": {"From": "client:eve", "Params": "a=1&b=%ZZ"},
            }
        elif kind in ("answer", "ringing"):
            payload["sdp"] = self.text(r.randrange(80))
        elif kind == "connected":
            payload = {
                "token": {"identity": "alice", "ttl": 3600},
                "region": "gll",
                "edge": "roaming",
            }
        elif kind == "error":
            payload["error"] = {"code": 31000, "message": "fuzz"}
        elif kind == "hangup" and r.random() < 0.5:
            payload["error"] = {"code": 31005, "message": "fuzz"}
        elif kind == "dtmf":
            payload["dtmf"] = "123#*"
        return kind, payload

    def mutate(self, payload: Any) -> Any:
        """The payload with one field replaced, added or removed."""
        r = self.rng
        if not isinstance(payload, dict) or not payload or r.random() < 0.2:
            return self.value()
        out = dict(payload)
        key = r.choice(list(out))
        action = r.randrange(4)
        if action == 0:
            del out[key]
        elif action == 1 and isinstance(out[key], dict):
            out[key] = self.mutate(out[key])
        else:
            out[key if action != 3 else self.text(3)] = self.value()
        return out

    def frame(self) -> str | bytes:
        """One hostile frame."""
        r = self.rng
        pick = r.randrange(12)
        kind, payload = self.valid()
        if pick == 0:  # truncated JSON
            text = frame(kind, payload)
            return text[: r.randrange(len(text))]
        if pick == 1:  # deep nesting
            depth = r.choice([100, 1000, 100_000])
            return '{"type":"invite","payload":' + "[" * depth + "]" * depth + "}"
        if pick == 2:  # unknown or mistyped type
            return frame(self.value(), payload)
        if pick == 3:  # top level of the wrong shape
            return json.dumps(self.value())
        if pick == 4:  # huge number literals JSON allows
            big = r.choice(["1e999", "-1e999", "1" + "0" * 400, "1" * 5000])
            field = r.choice(["ttl", "code", "callsid", "sdp"])
            return (
                '{"type":"connected","payload":{"token":{"identity":"a","ttl":'
                + (big if field == "ttl" else "1")
                + '},"callsid":'
                + (big if field == "callsid" else '"x"')
                + ',"error":{"code":'
                + (big if field == "code" else "1")
                + "}}}"
            ).replace('"connected"', f'"{kind}"')
        if pick == 5:  # binary frame
            return r.randbytes(r.randrange(64))
        if pick == 6:  # wrong version and payload types
            return frame(kind, self.value(), version=self.value())
        if pick == 7:  # heartbeat and whitespace
            return r.choice(["\n", "\n\n", " ", "", "\r\n"])
        return frame(kind, self.mutate(payload))


class HostileGateway:
    """A gateway on 127.0.0.1 that registers the phone, then storms it.

    Args:
        frames: how many hostile frames to send (over all connections).
        seed: the RNG seed of the frames.
        batch: frames sent between two yields to the loop.
        script: exact frames to send instead (``frames`` is then ignored).
    """

    def __init__(
        self,
        frames: int,
        seed: int,
        *,
        batch: int = 200,
        script: list[str | bytes] | None = None,
    ) -> None:
        self.fuzzer = FrameFuzzer(seed)
        #: Frames to send instead of fuzzed ones (regression tests).
        self.script = list(script) if script is not None else None
        self.remaining = frames if script is None else len(script)
        self.batch = batch
        self.sent = 0
        self.connections = 0
        self.storm_done = asyncio.Event()
        #: After the storm, new connections are piped to this URL, if set.
        self.relay_to: str | None = None
        #: Frames the phone sent during the storm.
        self.frames_seen = 0
        self._server: Server | None = None
        self._on_registered: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/signal"

    async def __aenter__(self) -> HostileGateway:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        if self.storm_done.is_set():
            if self.relay_to is not None:
                await self._relay(ws, self.relay_to)
            return
        with contextlib.suppress(ConnectionClosed):
            await self._register(ws)
            drain = asyncio.create_task(self._drain(ws))
            try:
                await self._storm(ws)
            finally:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        # End the session: the phone must drop every call and reconnect.
        await ws.close()

    async def _register(self, ws: ServerConnection) -> None:
        while True:
            data = await ws.recv()
            kind = json.loads(data).get("type") if data != "\n" else None
            if kind == "listen":
                await ws.send(
                    frame("connected", {"token": {"identity": "alice", "ttl": 3600}})
                )
            elif kind == "register":
                await ws.send(frame("ready", {}))
                return

    async def _drain(self, ws: ServerConnection) -> None:
        async for _data in ws:
            self.frames_seen += 1

    async def _storm(self, ws: ServerConnection) -> None:
        while self.remaining > 0:
            for _ in range(min(self.batch, self.remaining)):
                self.remaining -= 1
                self.sent += 1
                if self.script is not None:
                    await ws.send(self.script[self.sent - 1])
                else:
                    await ws.send(self.fuzzer.frame())
            await asyncio.sleep(0)  # let the phone's loop run
        self.storm_done.set()

    async def _relay(self, ws: ServerConnection, url: str) -> None:
        async with connect(url) as upstream:

            async def pipe(src: Any, dst: Any) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for data in src:
                        await dst.send(data)

            down = asyncio.create_task(pipe(upstream, ws))
            up = asyncio.create_task(pipe(ws, upstream))
            await asyncio.wait([down, up], return_when=asyncio.FIRST_COMPLETED)
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
