"""Signaling URLs from ``edge``/``region`` the way Twilio.Device maps them.

2.x dialect (signaling-protocol.md §1.1): ``wss://voice-js.<edge>.twilio.com/signal``
with ``roaming`` as the default edge; any edge string is accepted. The seed's
``region`` option is translated to its edge through Twilio's region/edge table
(deprecated short regions are remapped first). An explicit ``signaling_url``
(``ws://`` or ``wss://``) overrides both; it is how phones reach the local exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from appliance.errors import ConfigError

__all__ = ["EDGE_BY_REGION", "signaling_urls"]

DEFAULT_EDGE = "roaming"

#: regionToEdge of the SDK's regions.ts (both major versions).
EDGE_BY_REGION: dict[str, str] = {
    "au1": "sydney",
    "br1": "sao-paulo",
    "ie1": "dublin",
    "de1": "frankfurt",
    "jp1": "tokyo",
    "sg1": "singapore",
    "us1": "ashburn",
    "us2": "umatilla",
    "gll": "roaming",
    "us1-ix": "ashburn-ix",
    "us2-ix": "san-jose-ix",
    "ie1-ix": "london-ix",
    "de1-ix": "frankfurt-ix",
    "sg1-ix": "singapore-ix",
    "au1-ix": "sydney-ix",
    "jp1-ix": "tokyo-ix",
    "us1-tnx": "ashburn-ix",
    "us2-tnx": "san-jose-ix",
    "ie1-tnx": "london-ix",
    "de1-tnx": "frankfurt-ix",
    "sg1-tnx": "singapore-ix",
    "au1-tnx": "sydney-ix",
    "jp1-tnx": "tokyo-ix",
}

# v1's deprecatedRegions, remapped before the table above.
_DEPRECATED_REGIONS = {
    "au": "au1",
    "br": "br1",
    "ie": "ie1",
    "jp": "jp1",
    "sg": "sg1",
    "us-or": "us1",
    "us-va": "us1",
}


def _edge_url(edge: str) -> str:
    if not edge or any(c in edge for c in "/:@ "):
        raise ConfigError("edge", f"not a valid edge name: {edge!r}")
    return f"wss://voice-js.{edge}.twilio.com/signal"


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(
            "signaling_url", f"must be a ws:// or wss:// URL with a host: {url!r}"
        )
    return url


def signaling_urls(
    *,
    signaling_url: str | Sequence[str] | None = None,
    edge: str | Sequence[str] | None = None,
    region: str | None = None,
) -> list[str]:
    """Return the signaling URLs to try, in order.

    Raises:
        ConfigError: invalid URL or edge, unknown region, or both region and
            edge given (the SDK refuses the combination too).
    """
    if signaling_url is not None:
        urls = [signaling_url] if isinstance(signaling_url, str) else signaling_url
        if not urls:
            raise ConfigError("signaling_url", "must not be empty")
        return [_check_url(u) for u in urls]
    if edge is not None and region not in (None, "gll"):
        raise ConfigError("region", "cannot be combined with edge")
    if edge is not None:
        edges = [edge] if isinstance(edge, str) else list(edge)
        if not edges:
            raise ConfigError("edge", "must not be empty")
        return [_edge_url(e) for e in edges]
    if region is None:
        return [_edge_url(DEFAULT_EDGE)]
    name = _DEPRECATED_REGIONS.get(region, region)
    if name not in EDGE_BY_REGION:
        raise ConfigError(
            "region", f"unknown region {region!r}; known: {', '.join(EDGE_BY_REGION)}"
        )
    return [_edge_url(EDGE_BY_REGION[name])]
