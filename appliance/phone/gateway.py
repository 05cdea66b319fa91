"""What the Device builds from its options and token to talk to the gateway.

Pure helpers of :class:`~appliance.phone.device.Device`: which identity a
token names and whether it allows incoming calls (the Device registers only
then), the signaling protocol core a session is opened with (URLs, backoff,
the ``browserinfo`` of the ``listen`` message, signaling-protocol.md §2.1),
which options make a new session necessary, the media settings of a call,
and the parameters an incoming call's invite carries.
"""

from __future__ import annotations

import logging
import math
import platform
import random
import sys
from collections.abc import Mapping

import jwt

from appliance import __version__
from appliance.media.session import IceServer, MediaConfig
from appliance.phone.options import DeviceOptions
from appliance.signaling.backoff import BackoffPolicy
from appliance.signaling.messages import decode_params
from appliance.signaling.protocol import ClientProtocol

__all__ = [
    "invite_parameters",
    "media_config",
    "new_protocol",
    "reconnect_timeout_s",
    "session_options",
    "token_grants",
]

logger = logging.getLogger(__name__)


def token_grants(token: str) -> tuple[str | None, bool]:
    """Read identity and incoming permission from a token without verifying it.

    The gateway verifies the token; the phone only needs to know whether to
    register. An unreadable token registers anyway and the gateway says why not.
    """
    try:
        claims = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False}
        )
    except jwt.PyJWTError:
        return None, True
    grants = claims.get("grants")
    if isinstance(grants, dict):
        identity = grants.get("identity")
        voice = grants.get("voice") if isinstance(grants.get("voice"), dict) else {}
        incoming = voice.get("incoming") if isinstance(voice, dict) else None
        allowed = isinstance(incoming, dict) and incoming.get("allow") is True
        return (identity if isinstance(identity, str) else None), allowed
    scope = claims.get("scope")
    if isinstance(scope, str):  # capability token (signaling-protocol.md §6.2)
        return None, "scope:client:incoming" in scope
    return None, True


def new_protocol(options: DeviceOptions, token: str) -> ClientProtocol:
    """The signaling protocol core of a new session for ``token``."""
    if options.warnings and options.region != "gll":
        logger.warning("the region option is deprecated; use edge")
    return ClientProtocol(
        urls=options.urls(),
        token=token,
        backoff=BackoffPolicy.for_option(options.backoff_max_ms),
        random=random.random,
        browserinfo={
            "p": "appliance",
            "v": __version__,
            "browser": {
                "userAgent": f"appliance/{__version__} Python/"
                f"{platform.python_version()}",
                "platform": sys.platform,
            },
            "plugin": "rtc",
        },
        register_payload={"callWaiting": options.allow_incoming_while_busy},
        reconnect_timeout_s=reconnect_timeout_s(options),
    )


def reconnect_timeout_s(options: DeviceOptions) -> int:
    """``listen.reconnectTimeout``: the SDK's ``min(ceil(ms / 1000), 30)`` (§2.2)."""
    return min(math.ceil(options.max_call_signaling_timeout_ms / 1000), 30)


def session_options(options: DeviceOptions) -> tuple[object, ...]:
    """The options a signaling session is built from (a change needs a new one)."""
    return (
        tuple(options.urls()),
        options.backoff_max_ms,
        options.allow_incoming_while_busy,
        options.dscp and options.signaling_dscp,
        options.max_call_signaling_timeout_ms,
    )


def media_config(options: DeviceOptions) -> MediaConfig:
    """The media settings of a call: ICE servers, host addresses, codecs, DSCP."""
    return MediaConfig(
        ice_servers=tuple(
            IceServer(s.urls, s.username, s.credential)
            for s in options.rtc_configuration
        ),
        local_addresses=options.local_addresses,
        codecs=tuple("PCMU" if c == "pcmu" else c for c in options.codec_preferences),
        dscp=options.dscp,
        telephone_event=options.telephone_event,
        opus_bitrate=options.opus_bitrate_bps,
    )


def invite_parameters(
    payload: Mapping[str, object], sid: str
) -> tuple[dict[str, str], dict[str, str]]:
    """An invite's call parameters (with ``CallSid``) and custom parameters."""
    raw = payload.get("parameters")
    parameters = (
        {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    )
    parameters.setdefault("CallSid", sid)
    custom = decode_params(parameters["Params"]) if "Params" in parameters else {}
    return parameters, custom
