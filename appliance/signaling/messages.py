"""Wire format of Twilio's signaling protocol ("PStream"): pure encode and decode.

Every frame is one JSON text message ``{"type", "version", "payload"}``
(signaling-protocol.md §2.1); a frame that is exactly ``"\\n"`` is a heartbeat.
Clients send version ``"1.6"`` (the 2.x dialect); gateways send ``""`` and
nobody checks the inbound version. Wire names (``callsid``, ``sdp``...) are kept
as they are here and nowhere else.

Strict JSON both ways (RFC 8259): Python's ``json`` reads and writes ``NaN``,
``Infinity`` and ``-Infinity`` by default, which are not JSON, and a strict
parser (the browser SDK's ``JSON.parse``) rejects the whole frame. So
:func:`decode` refuses them (:func:`loads`) and :func:`encode` never produces
them. A number too large for a double (``1e999``) is valid JSON, but Python
reads it as infinity, which no frame may carry onwards: such a value would
fail later, far from the socket that sent it (in a size check, on encode), so
:func:`loads` refuses it too.

Frames go out as UTF-8 (``ensure_ascii=False``): escaping every non-ASCII
character as ``\\uXXXX`` would triple a frame of non-Latin text
(see :mod:`appliance.signaling.limits`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote_plus

from appliance.errors import RemoteProtocolError, UnknownMessageTypeError
from appliance.log import wire

__all__ = [
    "GATEWAY_VERSION",
    "HEARTBEAT",
    "PROTOCOL_VERSION",
    "REJECT_BUSY",
    "Message",
    "MessageType",
    "decode",
    "decode_params",
    "encode",
    "encode_params",
    "finite_number",
    "loads",
    "redact",
]

PROTOCOL_VERSION = "1.6"
GATEWAY_VERSION = ""
HEARTBEAT = "\n"
#: ``reject{callsid, reason}``: our phones' extension for do-not-disturb, a
#: decline meaning "busy here" (31486 to the caller) rather than "declined"
#: (31603). The SDK sends no reason and the real gateway ignores unknown keys.
REJECT_BUSY = "busy"


class MessageType(StrEnum):
    """Every message type of the protocol (signaling-protocol.md §2.2, §2.3)."""

    # client -> gateway
    LISTEN = "listen"
    REGISTER = "register"
    REINVITE = "reinvite"
    REJECT = "reject"
    DTMF = "dtmf"
    # both directions
    INVITE = "invite"
    ANSWER = "answer"
    HANGUP = "hangup"
    MESSAGE = "message"
    # gateway -> client
    CONNECTED = "connected"
    READY = "ready"
    OFFLINE = "offline"
    RINGING = "ringing"
    CANCEL = "cancel"
    ERROR = "error"
    CLOSE = "close"
    ACK = "ack"
    # legacy, forwarded but unused (§2.3)
    CANDIDATE = "candidate"
    PRESENCE = "presence"
    ROSTER = "roster"


# Payload keys without which a message cannot be acted upon. A missing key is a
# RemoteProtocolError (31400), as the SDK does for an invite without sdp.
_REQUIRED: dict[MessageType, tuple[str, ...]] = {
    MessageType.LISTEN: ("token",),
    MessageType.REGISTER: ("media",),
    MessageType.INVITE: ("callsid", "sdp"),
    MessageType.ANSWER: ("callsid", "sdp"),
    MessageType.REINVITE: ("callsid", "sdp"),
    MessageType.REJECT: ("callsid",),
    MessageType.HANGUP: ("callsid",),
    MessageType.DTMF: ("callsid", "dtmf"),
    MessageType.MESSAGE: ("callsid",),
    MessageType.RINGING: ("callsid",),
    MessageType.CANCEL: ("callsid",),
    MessageType.ERROR: ("error",),
    MessageType.ACK: ("callsid",),
}


@dataclass(frozen=True)
class Message:
    """One signaling frame."""

    type: MessageType
    payload: dict[str, Any] = field(default_factory=dict)
    version: str = PROTOCOL_VERSION

    @property
    def callsid(self) -> str | None:
        """The ``callsid`` of the payload, if any."""
        value = self.payload.get("callsid")
        return value if isinstance(value, str) else None


class _NotStrictJsonError(ValueError):
    """A ``NaN``/``Infinity`` literal or a number that overflows a double."""


def _refuse_constant(name: str) -> Any:
    raise _NotStrictJsonError(f"frame is not strict JSON: {name} is not allowed")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _NotStrictJsonError(
            "frame is not strict JSON: a number overflows a double"
        )
    return number


def loads(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``.

    Also refuses a number too large for a double (``1e999``), which
    ``json.loads`` would read as infinity.

    Raises:
        ValueError: ``text`` is not strict JSON (the message says why).
        RecursionError: nested too deeply for the parser.
    """
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(message: Message) -> str:
    """Serialise a message to the JSON text of one WebSocket frame.

    Raises:
        ValueError: the payload holds a float that JSON cannot carry (NaN,
            infinity); such a frame is never produced.
    """
    return _dumps(
        {
            "type": str(message.type),
            "version": message.version,
            "payload": message.payload,
        }
    )


def decode(text: str) -> Message:
    """Parse one frame (not a heartbeat) into a :class:`Message`.

    Raises:
        RemoteProtocolError: the frame is not strict JSON (NaN and Infinity are
            refused), is nested too deeply, has an unknown type, or lacks
            a payload key the type requires.
    """
    try:
        data = loads(text)
    except _NotStrictJsonError as exc:
        raise RemoteProtocolError(message=str(exc)) from exc
    except ValueError as exc:
        raise RemoteProtocolError(message="frame is not JSON") from exc
    except RecursionError as exc:
        # json nests by recursion: a few KB of "[[[..." exhaust the stack.
        raise RemoteProtocolError(
            message="frame is not JSON: nested too deeply"
        ) from exc
    if not isinstance(data, dict):
        raise RemoteProtocolError(message="frame is not a JSON object")
    try:
        kind = MessageType(str(data.get("type")))
    except ValueError as exc:
        # The type is the client's, of any size (up to the frame limit): it
        # is quoted escaped and cut short, as in a log line.
        raise UnknownMessageTypeError(
            message=f"unknown message type {wire(data.get('type'))}"
        ) from exc
    payload = data.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise RemoteProtocolError(message=f"{kind} payload is not an object")
    missing = [key for key in _REQUIRED.get(kind, ()) if payload.get(key) is None]
    if missing:
        raise RemoteProtocolError(
            message=f"malformed {kind}: missing {', '.join(missing)}",
            call_sid=payload.get("callsid")
            if isinstance(payload.get("callsid"), str)
            else None,
        )
    version = data.get("version")
    return Message(kind, payload, version if isinstance(version, str) else "")


def finite_number(value: object) -> float | None:
    """A JSON number as a finite float, or None if it is not one.

    A gateway's number may be a bool (``True`` is an int to Python), an
    integer too large for a float (``float(10**400)`` raises OverflowError) or
    ``1e999``, which Python's parser reads as infinity: none is a usable
    duration or count.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


_SECRET_KEYS = frozenset({"token", "reconnect"})


def redact(text: str) -> str:
    """Return a frame fit for logs: token values replaced by ``********``.

    Frames that are not JSON objects are returned unchanged (heartbeats).
    """
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return text
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict) or not _SECRET_KEYS & payload.keys():
        return text
    cleaned = {
        k: ("********" if k in _SECRET_KEYS and isinstance(v, str) else v)
        for k, v in payload.items()
    }
    return _dumps({**data, "payload": cleaned})


# encodeURIComponent leaves these unescaped; the SDK builds twilio.params with it
# (signaling-protocol.md §5, "Params").
_URI_COMPONENT_SAFE = "-_.!~*'()"


def encode_params(params: dict[str, Any]) -> str:
    """Encode connect() params the way the SDK does: ``k=v`` joined by ``&``."""
    return "&".join(
        f"{quote(str(k), safe=_URI_COMPONENT_SAFE)}="
        f"{quote(str(v), safe=_URI_COMPONENT_SAFE)}"
        for k, v in params.items()
    )


def decode_params(text: str) -> dict[str, str]:
    """Decode url-encoded params (``Params`` of an invite), ``+`` meaning space."""
    result: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        result[unquote_plus(key)] = unquote_plus(value)
    return result
