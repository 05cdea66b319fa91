"""DSCP on the wire: signaling AF31 by default, media EF, read from packets.

A raw ``AF_PACKET`` socket on ``lo`` (root only, as ``tcpdump`` would be)
sees every frame the phone sends; the test reads the DS field of the IPv4
header (TOS) or the IPv6 traffic class and checks each packet of the phone's
signaling connection, from its SYN on, and each UDP packet of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from tests.conftest import local_device, make_token, new_keyring, scaled, wait_until

ETH_P_ALL = 0x0003  # linux/if_ether.h; socket.ETH_P_ALL only from Python 3.12
PACKET_OUTGOING = 4  # linux/if_packet.h: each frame on lo is seen out and in
AF31, CS3, EF = 0x68, 0x60, 0xB8  # DS field = DSCP << 2 (RFC 2474 §3)
TCP_SYN = 0x02

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="a packet socket on lo needs CAP_NET_RAW (root)"
)


@dataclass(frozen=True)
class Packet:
    tos: int
    proto: int
    src_port: int
    dst_port: int
    tcp_flags: int


@dataclass
class Capture:
    packets: list[Packet] = field(default_factory=list)

    def tcp_to(self, port: int) -> list[Packet]:
        return [p for p in self.packets if p.proto == 6 and p.dst_port == port]

    def udp_from(self, ports: set[int]) -> list[Packet]:
        return [p for p in self.packets if p.proto == 17 and p.src_port in ports]


def parse_frame(frame: bytes) -> Packet | None:
    """TOS, protocol, ports and TCP flags of an Ethernet frame from lo."""
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    ip = frame[14:]
    if ethertype == 0x0800:
        tos, proto, header = ip[1], ip[9], (ip[0] & 0x0F) * 4
    elif ethertype == 0x86DD:
        # Version (4 bits), traffic class (8), flow label (20): RFC 8200 §3.
        tos, proto, header = ((ip[0] & 0x0F) << 4) | (ip[1] >> 4), ip[6], 40
    else:
        return None
    if proto not in (6, 17) or len(ip) < header + 14:
        return None
    src, dst = struct.unpack_from("!HH", ip, header)
    flags = ip[header + 13] if proto == 6 else 0
    return Packet(tos, proto, src, dst, flags)


@contextlib.asynccontextmanager
async def capture_lo() -> AsyncIterator[Capture]:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind(("lo", 0))
    raw.setblocking(False)
    capture = Capture()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        while True:
            try:
                frame, address = raw.recvfrom(65535)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                packet = parse_frame(frame)
                if packet is not None:
                    capture.packets.append(packet)

    loop.add_reader(raw.fileno(), drain)
    try:
        yield capture
    finally:
        loop.remove_reader(raw.fileno())
        drain()
        raw.close()


def local_udp_ports() -> set[int]:
    """Ports of this process's UDP sockets (the phone's and the echo's ICE)."""
    ports = set()
    for entry in Path("/proc/self/fd").iterdir():
        try:
            sock = socket.socket(fileno=os.dup(int(entry.name)))
        except OSError:
            continue
        with sock:
            if sock.type == socket.SOCK_DGRAM and sock.family == socket.AF_INET:
                ports.add(sock.getsockname()[1])
    return ports


@pytest.mark.slow  # an echo call through aiortc
async def test_signaling_leaves_af31_and_media_ef(exchange: ExchangeServer) -> None:
    port = int(exchange.url.rsplit(":", 1)[1].split("/")[0])
    async with capture_lo() as capture:
        phone = local_device(exchange.url)
        try:
            await phone.setup(make_token("desk-1"))
            call = await phone.connect({"To": "echo"})
            accepted = asyncio.Event()
            call.on("accept", lambda _c: accepted.set())
            await asyncio.wait_for(accepted.wait(), scaled(10))
            media_ports = local_udp_ports()
            await wait_until(lambda: len(capture.udp_from(media_ports)) >= 20, 10.0)
            await call.disconnect()
        finally:
            await phone.destroy()
        await wait_until(lambda: any(p.tcp_flags & 0x01 for p in capture.tcp_to(port)))

    signaling = capture.tcp_to(port)
    assert signaling[0].tcp_flags & TCP_SYN  # seen from the very first packet
    assert len(signaling) > 5
    assert {p.tos for p in signaling} == {AF31}
    media = capture.udp_from(media_ports)
    assert {p.tos for p in media} == {EF}


@pytest.mark.parametrize(
    ("host", "options", "expected"),
    [
        ("::1", {"signaling_dscp": 24}, CS3),  # IPV6_TCLASS, a chosen class
        ("127.0.0.1", {"dscp": False}, 0),  # Twilio's dscp=false: no marks
        ("127.0.0.1", {"signaling_dscp": 0}, 0),  # signaling alone unmarked
    ],
)
async def test_signaling_mark_follows_the_options(host, options, expected) -> None:
    config = ExchangeConfig(keyring=new_keyring(), host=host, port=0)
    async with ExchangeServer(config) as exchange, capture_lo() as capture:
        port = int(exchange.url.rsplit(":", 1)[1].split("/")[0])
        phone = local_device(exchange.url, **options)
        try:
            await phone.setup(make_token("desk-1"))
            assert phone.status() == "ready"
        finally:
            await phone.destroy()
        await wait_until(lambda: any(p.tcp_flags & 0x01 for p in capture.tcp_to(port)))
    signaling = capture.tcp_to(port)
    assert signaling[0].tcp_flags & TCP_SYN
    assert {p.tos for p in signaling} == {expected}
