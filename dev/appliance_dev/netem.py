"""Two network namespaces joined by an impaired link, forwarded in user space.

The development and CI kernels have no ``netem`` qdisc (test-rig.md §5), so
loss, delay and jitter are added by a small forwarder process instead: it opens
two TUN devices in the root namespace, :class:`ImpairedLink` moves one into each
of two fresh namespaces as a point-to-point link (``10.X.Y.1`` <-> ``10.X.Y.2``),
and every IP packet one side sends comes out of the other side's TUN after the
decision of :class:`~appliance_dev.impairment.Impairer` (seeded, one per
direction). Nothing is bridged to any other interface: the only addresses are
the two inside the namespaces, so traffic never leaves the link.

Being a TUN link, it is transparent to ICE: the host candidate of each side is
its namespace address and STUN, DTLS and SRTP cross the same impaired path.

Teardown order matters (§5 gotcha): deleting a namespace destroys its TUN under
the forwarder, so the forwarder is stopped first, then the namespaces are
deleted. :meth:`ImpairedLink.close` does both whatever failed before, also on
KeyboardInterrupt, and ends any process still inside the namespaces (they can
only be processes the caller started there).

Needs root (namespaces, ``/dev/net/tun``) and ``ip`` from iproute2. Not part of
the phone: a development tool only.

Example::

    with ImpairedLink(Impairment(0.05, 0.040, 0.010), seed=1) as link:
        subprocess.run(link.command("b", ["ping", "-c", "3", link.address("a")]))
    print(link.stats)   # packets seen / dropped / reordered per direction
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import random
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from appliance_dev.impairment import Impairer, Impairment

__all__ = ["ImpairedLink", "Impairment", "LinkUnavailableError", "unavailable_reason"]

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_SIDES = ("a", "b")
#: The forwarder's nice value (below the phone unit's -5), where permitted.
FORWARDER_NICE = -10


class LinkUnavailableError(RuntimeError):
    """Namespaces or TUN devices cannot be made here (not root, no ``ip``)."""


def unavailable_reason() -> str | None:
    """Why :class:`ImpairedLink` cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and /dev/net/tun)"
    if shutil.which("ip") is None:
        return "needs `ip` from iproute2"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun (TUN driver missing)"
    return None


class ImpairedLink:
    """Namespaces ``a`` and ``b`` linked through the impairment forwarder.

    Args:
        impairment: applied to both directions.
        seed: seeds the A->B direction; B->A uses ``seed + 1``.
        ready_timeout_s: how long the forwarder may take to open its TUNs.
    """

    def __init__(
        self, impairment: Impairment, *, seed: int = 1, ready_timeout_s: float = 20.0
    ) -> None:
        self.impairment = impairment
        self.seed = seed
        tag = f"{os.getpid() % 100000}{secrets.token_hex(3)}"
        self.namespaces = {s: f"apnetem-{tag}-{s}" for s in _SIDES}
        self._tuns = {s: f"apn{secrets.token_hex(4)}{s}" for s in _SIDES}
        # 10.200.0.0 - 10.254.255.0: inside the namespaces only.
        net = f"10.{200 + secrets.randbelow(55)}.{secrets.randbelow(256)}"
        self._addresses = {"a": f"{net}.1", "b": f"{net}.2"}
        self._ready_timeout_s = ready_timeout_s
        self._forwarder: subprocess.Popen[str] | None = None
        self._made: list[str] = []
        self.stats: dict[str, Any] = {}

    def address(self, side: str) -> str:
        """The IPv4 address of ``side`` ("a" or "b") inside its namespace."""
        return self._addresses[side]

    @property
    def forwarder_pid(self) -> int | None:
        """The forwarder's process ID while it runs."""
        return None if self._forwarder is None else self._forwarder.pid

    def interface(self, side: str) -> str:
        """The name of ``side``'s end of the link inside its namespace."""
        return self._tuns[side]

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``side``'s namespace (``ip netns exec`` execs it,
        so the PID of the started process is the program's own)."""
        return ["ip", "netns", "exec", self.namespaces[side], *argv]

    def __enter__(self) -> ImpairedLink:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> ImpairedLink:
        """Make the namespaces, start the forwarder, move its TUNs in place."""
        reason = unavailable_reason()
        if reason:
            raise LinkUnavailableError(reason)
        try:
            for side in _SIDES:
                _ip("netns", "add", self.namespaces[side])
                self._made.append(self.namespaces[side])
                _ip("-n", self.namespaces[side], "link", "set", "lo", "up")
            self._start_forwarder()
            for side, peer in (("a", "b"), ("b", "a")):
                ns, tun = self.namespaces[side], self._tuns[side]
                _ip("link", "set", tun, "netns", ns)
                _ip("-n", ns, "addr", "add", self.address(side), "peer",
                    self.address(peer), "dev", tun)  # fmt: skip
                _ip("-n", ns, "link", "set", tun, "up")
        except BaseException:
            self.close()
            raise
        return self

    def _start_forwarder(self) -> None:
        spec = self.impairment
        self._forwarder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance_dev.netem",
                *("--tun", self._tuns["a"], self._tuns["b"]),
                *("--loss", repr(spec.loss), "--delay", repr(spec.delay_s)),
                *("--jitter", repr(spec.jitter_s), "--seed", str(self.seed)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._forwarder.stdout is not None
        line = _readline(self._forwarder.stdout, self._ready_timeout_s)
        if line.strip() != "ready":
            raise LinkUnavailableError(f"the forwarder did not start: {line!r}")

    def close(self) -> None:
        """Stop the forwarder, then end what runs in the namespaces and delete them.

        Safe to call twice and after a partial :meth:`open`.
        """
        proc, self._forwarder = self._forwarder, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            for line in (out or "").splitlines():
                with contextlib.suppress(ValueError):
                    self.stats = json.loads(line)
        while self._made:
            ns = self._made.pop()
            _end_processes_in(ns)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LinkUnavailableError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _readline(stream: Any, timeout_s: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return str(stream.readline()) if ready else ""


def _end_processes_in(ns: str) -> None:
    """SIGKILL what still runs in our namespace ``ns`` (started by our caller)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for word in done.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(word), signal.SIGKILL)


# ------------------------------------------------------------- the forwarder


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(
            fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI)
        )
    except OSError:
        os.close(fd)
        raise
    return fd


class _Forwarder:
    """Moves packets between two TUN fds through one Impairer per direction."""

    def __init__(self, fds: tuple[int, int], spec: Impairment, seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        self.fds = fds
        self.impairers = (
            Impairer(spec, random.Random(seed)),
            Impairer(spec, random.Random(seed + 1)),
        )
        self.write_errors = 0
        for i in (0, 1):
            self.loop.add_reader(fds[i], self._readable, i)

    def _readable(self, i: int) -> None:
        src, dst, impairer = self.fds[i], self.fds[1 - i], self.impairers[i]
        while True:
            try:
                packet = os.read(src, 65536)
            except BlockingIOError:
                return
            except OSError:  # the namespace (and its TUN) is gone
                self.done.set()
                return
            release = impairer.decide(self.loop.time())
            if release is not None:
                self.loop.call_at(release, self._write, dst, packet)

    def _write(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EBADF):
                self.done.set()
            self.write_errors += 1

    def stats(self) -> dict[str, Any]:
        a_to_b, b_to_a = (x.counts() for x in self.impairers)
        return {"a_to_b": a_to_b, "b_to_a": b_to_a, "write_errors": self.write_errors}


async def _forward(tuns: tuple[str, str], spec: Impairment, seed: int) -> None:
    fds = (_open_tun(tuns[0]), _open_tun(tuns[1]))
    forwarder = _Forwarder(fds, spec, seed)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forwarder.done.set)
    print("ready", flush=True)
    try:
        await forwarder.done.wait()
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
        print(json.dumps(forwarder.stats()), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The forwarder process (started by :class:`ImpairedLink`)."""
    parser = argparse.ArgumentParser(description="userspace impairment forwarder")
    parser.add_argument("--tun", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    spec = Impairment(args.loss, args.delay, args.jitter)
    # The link stands for a network, which the CPU load of the machine does
    # not slow down: run ahead of the processes under test where allowed.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, FORWARDER_NICE)
    asyncio.run(_forward((args.tun[0], args.tun[1]), spec, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
