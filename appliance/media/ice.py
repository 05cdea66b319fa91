"""Where aiortc's sockets are reached: host candidates and DSCP marking.

aioice has no option to choose the addresses it gathers host candidates on
(and it never offers 127.0.0.1, which the tests need), and neither aiortc nor
aioice sets ``IP_TOS``. Both fixes reach into aioice and are kept here, apart
from the session that uses them:

* :func:`install_host_address_hook` wraps ``aioice.ice.get_host_addresses``
  with a context variable (:data:`HOST_ADDRESSES`) that a session sets only
  while *it* gathers.
* :func:`mark_sockets` marks the media socket EF (DSCP 46; RFC 8837 §5,
  RFC 4594 "Telephony"). With BUNDLE and rtcp-mux one UDP socket carries
  STUN, DTLS, RTP and RTCP, so one ``IP_TOS``/``IPV6_TCLASS`` mark covers the
  call. aioice keeps its sockets in private attributes; the path is guarded
  and a miss is only a warning.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any

import aioice.ice

__all__ = [
    "DSCP_EF_TOS",
    "HOST_ADDRESSES",
    "ice_sockets",
    "install_host_address_hook",
    "mark_sockets",
]

logger = logging.getLogger(__name__)

#: The DS byte for Expedited Forwarding: DSCP 46 << 2 (RFC 3246, RFC 8837 §5).
DSCP_EF_TOS = 0xB8

# Addresses the current task may gather host candidates on; None = aioice's own
# choice. A ContextVar, not a global, so two sessions gathering at the same
# time (the exchange bridging two legs) cannot see each other's setting.
HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "appliance_ice_host_addresses", default=None
)

_HOOK_MARK = "_appliance_host_address_hook"


def install_host_address_hook() -> None:
    """Wrap ``aioice.ice.get_host_addresses`` once (idempotent)."""
    original = aioice.ice.get_host_addresses
    if getattr(original, _HOOK_MARK, False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        wanted = HOST_ADDRESSES.get()
        if wanted is None:
            return original(use_ipv4, use_ipv6)
        chosen = []
        for address in wanted:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                chosen.append(address)
        return chosen

    setattr(get_host_addresses, _HOOK_MARK, True)
    # aioice looks the function up as a module global at gathering time
    # (Connection.gather_candidates), so replacing the module attribute works.
    aioice.ice.get_host_addresses = get_host_addresses


def ice_sockets(pc: Any) -> Iterator[Any]:
    """Yield the UDP/TCP sockets of the ICE connection(s) of ``pc``.

    Walks private attributes of aiortc 1.16 / aioice 0.13
    (``RTCIceGatherer._connection._protocols``); yields nothing, with a
    warning, if they have moved.
    """
    for transceiver in pc.getTransceivers():
        ice_transport = getattr(transceiver.sender.transport, "transport", None)
        gatherer = getattr(ice_transport, "iceGatherer", None)
        connection = getattr(gatherer, "_connection", None)
        protocols = getattr(connection, "_protocols", None)
        if protocols is None:
            logger.warning(
                "cannot reach aioice sockets (aiortc internals changed?); "
                "media is sent without DSCP marking"
            )
            continue
        for protocol in protocols:
            transport = getattr(protocol, "transport", None)
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is None:
                # A TURN relay: the real socket belongs to the inner
                # client protocol of aioice's TurnTransport.
                inner = getattr(transport, "_TurnTransport__inner_protocol", None)
                inner_transport = getattr(inner, "transport", None)
                if inner_transport is not None:
                    sock = inner_transport.get_extra_info("socket")
            if sock is not None:
                yield sock


def mark_sockets(pc: Any, tos: int) -> None:
    """Mark every media socket of ``pc`` with the DS byte ``tos``."""
    for sock in ice_sockets(pc):
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        except OSError as exc:
            logger.warning("cannot set DSCP on %s: %s", sock.getsockname(), exc)
