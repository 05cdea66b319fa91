"""The local exchange: the gateway side of Twilio's signaling protocol.

:mod:`appliance.exchange.core` is the sans-I/O state machine,
:mod:`appliance.exchange.server` its asyncio/WebSocket adapter and
:mod:`appliance.exchange.config` its configuration. The server is not imported
here so that using the core does not load ``websockets``.
"""

from appliance.exchange.config import ExchangeConfig, build_config, load_config_file
from appliance.exchange.core import EchoHangup, EchoOffer, Exchange

__all__ = [
    "EchoHangup",
    "EchoOffer",
    "Exchange",
    "ExchangeConfig",
    "build_config",
    "load_config_file",
]
