"""Checks of the fields the exchange relays: size caps and client names.

Why a module of its own: every field that goes from one phone to another
(SDP, ``Params``, message content, identities, call sids, digits) has a cap
stated in :mod:`appliance.signaling.limits`, and each cap is answered with
the Twilio code that names it. Keeping the checks together keeps them
consistent with each other and with the limits, and keeps the state machine
in :mod:`appliance.exchange.core` about calls.

Each check returns ``None`` when the value is acceptable, or a
:class:`Refusal` (code and message) for the core to send back. Sizes are
measured as the value will sit in a frame
(:func:`~appliance.signaling.limits.json_size`).

Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from appliance.signaling.limits import (
    CONTENT_MAX_BYTES,
    IDENTITY_MAX_BYTES,
    PARAMS_MAX_BYTES,
    SDP_MAX_BYTES,
    SHORT_MAX_BYTES,
    TOKEN_MAX_BYTES,
    json_size,
    text_size,
)

__all__ = [
    "Refusal",
    "check_content",
    "check_identity",
    "check_params",
    "check_sdp",
    "check_short",
    "check_token",
]


@dataclass(frozen=True)
class Refusal:
    """Why a field was refused: a Twilio code and a message for the client."""

    code: int
    message: str


def check_sdp(kind: str, sdp: str) -> Refusal | None:
    """An offer or answer: at most ``SDP_MAX_BYTES`` (31100)."""
    if json_size(sdp) > SDP_MAX_BYTES:
        return Refusal(31100, f"{kind}: sdp exceeds {SDP_MAX_BYTES} bytes")
    return None


def check_params(params: str) -> Refusal | None:
    """``twilio.params`` received or ``Params`` relayed (31103)."""
    if text_size(params) > PARAMS_MAX_BYTES:
        return Refusal(31103, f"Params exceed {PARAMS_MAX_BYTES} bytes")
    return None


def check_identity(identity: str) -> Refusal | None:
    """A client name (``To``, a token's identity): size, no control characters.

    Control characters (categories Cc, Cf, Zl, Zp: newlines, bidi overrides)
    have no place in a client name and would forge or garble log lines.
    """
    if json_size(identity) > IDENTITY_MAX_BYTES:
        return Refusal(31105, f"client name exceeds {IDENTITY_MAX_BYTES} bytes")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in identity):
        return Refusal(31105, "client name contains control characters")
    return None


def check_content(content: object) -> Refusal | None:
    """A call message's ``content`` (31212, payload size exceeded)."""
    if json_size(content) > CONTENT_MAX_BYTES:
        return Refusal(31212, f"message content exceeds {CONTENT_MAX_BYTES} bytes")
    return None


def check_short(kind: str, name: str, value: object) -> Refusal | None:
    """A call sid, digits, a message type or an event sid (31100)."""
    if value is not None and json_size(value) > SHORT_MAX_BYTES:
        return Refusal(31100, f"{kind}: {name} exceeds {SHORT_MAX_BYTES} bytes")
    return None


def check_token(token: str) -> Refusal | None:
    """The token of a ``listen`` (31204, as any token that cannot be valid)."""
    if text_size(token) > TOKEN_MAX_BYTES:
        return Refusal(31204, f"token exceeds {TOKEN_MAX_BYTES} bytes")
    return None
