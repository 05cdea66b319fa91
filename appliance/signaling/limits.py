"""Every size limit of the signaling protocol, in one place, and how to measure.

Why one module: a limit that two ends state separately drifts. Before these
were written down, the exchange accepted frames up to its WebSocket library's
default (1 MiB) and relayed them with headers added, so a large invite reached
the callee above the 1 MiB the phone accepts and knocked it off signaling. Now
the chain is stated and checked (:func:`check_consistency`, run by the tests):

* a phone accepts frames up to :data:`PHONE_MAX_FRAME_BYTES`;
* the exchange accepts frames up to :data:`EXCHANGE_MAX_FRAME_BYTES`, and a
  phone never sends a larger one (it refuses locally instead of being closed);
* inside a frame, each field the exchange relays has a cap (SDP, ``Params``,
  message content, identities, short strings), refused with a Twilio code;
* so every frame the exchange sends fits in :data:`RELAY_MAX_FRAME_BYTES`,
  which is at most what a phone accepts. The exchange also checks each frame
  it sends against it, as a last guard.

Sizes are bytes of UTF-8 JSON as sent: frames go out with ``ensure_ascii=False``
(a non-ASCII character is 2-4 bytes, not a 6-12 byte ``\\uXXXX`` escape), and a
field is measured by :func:`json_size`, its own encoding, so the quotes and
escapes a value gains inside a frame are counted.

Pure: no I/O.
"""

from __future__ import annotations

import json

__all__ = [
    "CONTENT_MAX_BYTES",
    "ERROR_MESSAGE_MAX_CHARS",
    "EXCHANGE_MAX_FRAME_BYTES",
    "IDENTITY_MAX_BYTES",
    "PARAMS_MAX_BYTES",
    "PHONE_MAX_FRAME_BYTES",
    "RELAY_MAX_FRAME_BYTES",
    "SDP_MAX_BYTES",
    "SHORT_MAX_BYTES",
    "TOKEN_MAX_BYTES",
    "check_consistency",
    "json_size",
    "text_size",
]

#: Largest frame a phone accepts (its WebSocket ``max_size``).
PHONE_MAX_FRAME_BYTES = 1 << 20
#: Largest frame the exchange accepts (its WebSocket ``max_size``); a phone
#: refuses to send more.
EXCHANGE_MAX_FRAME_BYTES = 1 << 20
#: Largest frame the exchange sends; never above :data:`PHONE_MAX_FRAME_BYTES`.
RELAY_MAX_FRAME_BYTES = 256 << 10

#: An SDP offer or answer (an aiortc offer is 1-4 kB; 64 KiB leaves room for
#: many candidates). Over it: 31100.
SDP_MAX_BYTES = 64 << 10
#: ``twilio.params`` as received and ``Params`` as relayed (re-encoded).
#: Over it: 31103 (MaxParameterLengthExceeded).
PARAMS_MAX_BYTES = 16 << 10
#: The ``content`` of a call message. Over it: 31212 (payload size exceeded).
CONTENT_MAX_BYTES = 16 << 10
#: A client identity: the ``To`` of an invite, a token's identity.
#: Over it: 31105 (InvalidClientName).
IDENTITY_MAX_BYTES = 256
#: Call sids, DTMF strings, message types and event sids. Over it: 31100.
SHORT_MAX_BYTES = 256
#: The ``message`` of an ``error`` the exchange sends, in characters; a longer
#: one (quoting a client's value) is cut with :func:`appliance.log.wire`.
ERROR_MESSAGE_MAX_CHARS = 512
#: An access token in ``listen`` (a JWT with a Voice grant is under 1 kB).
#: Over it: 31204.
TOKEN_MAX_BYTES = 8 << 10

#: Bytes a frame adds around its relayed fields: type, version, the invite's
#: fixed parameters (sids, ApiVersion), keys and punctuation. Generous.
_FRAME_OVERHEAD_BYTES = 1024


def json_size(value: object) -> int:
    """Bytes ``value`` takes inside a frame (UTF-8 JSON, quotes and escapes)."""
    return len(
        json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8", "surrogatepass")
    )


def text_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (frames on the wire)."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_consistency() -> None:
    """Raise ``AssertionError`` if the stated limits contradict each other."""
    largest_invite = (
        SDP_MAX_BYTES + PARAMS_MAX_BYTES + 2 * IDENTITY_MAX_BYTES + SHORT_MAX_BYTES
    )
    largest_message = CONTENT_MAX_BYTES + 4 * SHORT_MAX_BYTES
    # error{code, message, callsid, voiceeventsid}; a character escaped by
    # wire() and then by JSON takes at most 12 bytes ("\\U0001f600").
    largest_error = 12 * ERROR_MESSAGE_MAX_CHARS + 2 * SHORT_MAX_BYTES
    largest_relayed = (
        max(largest_invite, largest_message, largest_error) + _FRAME_OVERHEAD_BYTES
    )
    if largest_relayed > RELAY_MAX_FRAME_BYTES:
        raise AssertionError("field caps add up to more than the relay limit")
    if RELAY_MAX_FRAME_BYTES > PHONE_MAX_FRAME_BYTES:
        raise AssertionError("the exchange may relay more than a phone accepts")
    if largest_relayed > EXCHANGE_MAX_FRAME_BYTES:
        raise AssertionError("the exchange refuses frames a phone may send")
