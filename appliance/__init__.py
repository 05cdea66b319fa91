"""Desk-phone firmware: a Twilio.Device-compatible softphone and a local exchange.

``from appliance import Device`` is the public entry point; importing the package
has no side effects (the engine module is loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Connection", "Device", "__version__"]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from appliance.phone.connection import Connection
    from appliance.phone.device import Device


def __getattr__(name: str) -> Any:
    # Lazy so that `appliance token` and the exchange start without loading aiortc.
    if name == "Device":
        from appliance.phone.device import Device

        return Device
    if name == "Connection":
        from appliance.phone.connection import Connection

        return Connection
    raise AttributeError(name)
