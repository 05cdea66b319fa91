"""The one exception tree of the firmware, with Twilio's numeric error codes.

Hierarchy::

    ApplianceError
      ConfigError(ApplianceError, ValueError)   bad option or config value (names key)
        InvalidArgumentError                     bad argument to an API call
      TwilioError                                carries a Twilio error code and message
        SignalingError
          ProtocolError                          abstract; never raised directly
            LocalProtocolError                   we tried something the protocol forbids
            RemoteProtocolError                  the peer sent something malformed
              UnknownMessageTypeError            a type we do not know (dropped)
          InvalidStateError                      verb not allowed in the current state
          AuthenticationError                    token rejected, malformed or expired
          ConnectionLostError                    transport closed or unavailable
        CallError                                call failures: declined, busy, ...
        MediaError
          NegotiationError                       SDP or codec failure
          AudioDeviceError(MediaError, OSError)  unknown, missing or failing device
      HardwareError(ApplianceError, OSError)     GPIO, display
      ControlError                               no answer on the control socket
      ProvisioningError                          with a numeric ``code`` (see below)
      UpdateError
        SignatureError                           never retried

Provisioning errors carry Twilio-style codes too, from the same table: the
provisioner answers with REST API codes (20001 bad input, 20003 unknown
credential, 20403 revoked, 20404 not found, 20429 too many requests); on the
phone a provisioner that cannot be reached is 31009 (31003 when it does not
answer in time), one that answers with an HTTP 5xx 20500, an answer that is
not what the API promises 31400, a certificate not trusted 20151, and a USB
file refused for its signature 20151, its expiry 20104, another phone or
provisioner 31201, its content 31400, a stick gone mid-read 31009
(docs/provisioning.md).

Every error the engine emits on an ``error`` event is a :class:`TwilioError`, so a
handler can always read ``code`` and ``message``, as with Twilio.Device. The codes
and their texts come from the Voice SDK error reference (signaling-protocol.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOGUE",
    "ApplianceError",
    "AudioDeviceError",
    "AuthenticationError",
    "CallError",
    "CallLogError",
    "ConfigError",
    "ConnectionLostError",
    "ControlError",
    "ErrorInfo",
    "HardwareError",
    "InvalidArgumentError",
    "InvalidStateError",
    "LocalProtocolError",
    "MediaError",
    "NegotiationError",
    "ProtocolError",
    "ProvisioningError",
    "RemoteProtocolError",
    "SignalingError",
    "SignatureError",
    "TwilioError",
    "UnknownMessageTypeError",
    "UpdateError",
    "error_for_code",
    "error_from_payload",
    "precise_code",
]


@dataclass(frozen=True)
class ErrorInfo:
    """A Twilio error code with its short name and default message."""

    code: int
    name: str
    message: str


def _table(*rows: tuple[int, str, str]) -> dict[int, ErrorInfo]:
    return {code: ErrorInfo(code, name, message) for code, name, message in rows}


#: Codes the engine, the local exchange and provisioning use (Voice SDK error
#: reference; the 200xx below 20100 and 20403-20500 are Twilio's REST API codes).
CATALOGUE: dict[int, ErrorInfo] = _table(
    (20001, "InvalidParameter", "Invalid parameter"),
    (20003, "PermissionDenied", "Permission denied"),
    (20101, "AccessTokenInvalid", "Invalid Access Token"),
    (20104, "AccessTokenExpired", "Access Token expired or expiration date invalid"),
    (20151, "AuthenticationFailed", "Authentication failed"),
    (20403, "Forbidden", "Forbidden"),
    (20404, "NotFound", "Not found"),
    (20429, "TooManyRequests", "Too many requests"),
    (20500, "InternalServerError", "Internal server error"),
    (31000, "UnknownError", "An unknown error has occurred"),
    (31001, "ApplicationNotFound", "Application not found"),
    (31002, "ConnectionDeclined", "Connection declined"),
    (31003, "ConnectionTimeout", "Connection timeout"),
    (
        31005,
        "ConnectionError",
        "Websocket connection to the signaling server was unexpectedly ended",
    ),
    (31008, "CallCancelledError", "Call cancelled"),
    (31009, "TransportError", "No transport available to send or receive messages"),
    (31100, "MalformedRequest", "Malformed request"),
    (31101, "MissingParameterArray", "Missing parameter array in request"),
    (31102, "AuthorizationTokenMissing", "Missing access token"),
    (31103, "MaxParameterLengthExceeded", "Parameters are too long"),
    (31105, "InvalidClientNameError", "Invalid client name"),
    (31201, "AuthorizationError", "Authorization error"),
    (31202, "JWTSignatureValidationFailed", "JWT signature validation failed"),
    (31203, "NoValidAccountError", "No valid account"),
    (31204, "InvalidJWTTokenError", "JWT is invalid"),
    (31205, "JWTTokenExpired", "JWT token expired"),
    (31206, "RateExceededError", "Rate exceeded"),
    (31207, "JWTTokenExpirationTooLong", "JWT token expiration too long"),
    (31208, "UserMediaDenied", "User denied access to the microphone"),
    (31400, "BadRequest", "Bad request"),
    (31401, "PermissionDeniedError", "Permission to use the microphone was denied"),
    (31402, "AcquisitionFailedError", "The audio device could not be acquired"),
    (31404, "NotFound", "Not found"),
    (31480, "TemporarilyUnavailable", "Temporarily unavailable"),
    (31486, "BusyHere", "Busy here"),
    (31603, "Decline", "Call declined"),
    (53000, "SignalingConnectionError", "Signaling connection error"),
    (53001, "SignalingConnectionDisconnected", "Signaling connection disconnected"),
    (
        53400,
        "ClientLocalDescFailed",
        "Client is unable to create or apply a local media description",
    ),
    (
        53402,
        "ClientRemoteDescFailed",
        "Client is unable to apply a remote media description",
    ),
    (53405, "MediaConnectionFailed", "Media connection failed"),
)

# Gateway codes that Twilio.Device 2.x re-labels with a more precise code
# (signaling-protocol.md §3, "How a gateway error surfaces").
_PRECISE = {31201: 20151, 31204: 20101, 31205: 20104}


def precise_code(code: int) -> int | None:
    """Return the 2.x code Twilio.Device reports for a gateway code, if any."""
    return _PRECISE.get(code)


class ApplianceError(Exception):
    """Base of every error raised by the firmware."""


class ConfigError(ApplianceError, ValueError):
    """An option or configuration value is invalid.

    Validation reports every problem at once (style guide 4.8), so one error
    can carry several: ``problems`` lists them as ``(key, reason)`` pairs in
    the order they were found, and ``key``/``reason`` are the first one. The
    message is one ``key: reason`` line per problem.

    Args:
        key: the option or config key, e.g. ``"backoff_max_ms"``.
        reason: what is wrong with it.
        more: further ``(key, reason)`` problems found in the same pass.
    """

    def __init__(
        self, key: str, reason: str, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason
        self.problems: list[tuple[str, str]] = [(key, reason), *more]

    @classmethod
    def from_problems(cls, problems: Sequence[tuple[str, str]]) -> ConfigError:
        """One error carrying every ``(key, reason)`` of ``problems`` (not empty)."""
        if not problems:
            raise ValueError("no problems to report")
        (key, reason), *more = problems
        return cls(key, reason, more)

    def __str__(self) -> str:
        return "\n".join(
            f"{key}: {reason}" if key else reason for key, reason in self.problems
        )


class InvalidArgumentError(ConfigError):
    """An argument of an API call is invalid (e.g. ``send_digits("x")``)."""


class TwilioError(ApplianceError):
    """An error with a Twilio numeric code, as emitted on ``error`` events.

    Attributes:
        code: the Twilio error code (e.g. 31205).
        message: a human readable description.
        name: the short name from the Twilio error reference.
        call_sid: the CallSid the error concerns, when there is one.
        twilio_error: for gateway codes that Twilio.Device 2.x re-labels
            (31201, 31204, 31205), the error with the precise code.
    """

    default_code = 31000

    def __init__(
        self,
        code: int | None = None,
        message: str | None = None,
        *,
        call_sid: str | None = None,
    ) -> None:
        self.code = self.default_code if code is None else code
        info = CATALOGUE.get(self.code)
        self.name = info.name if info else "UnknownError"
        self.message = message or (info.message if info else "Unknown error")
        self.call_sid = call_sid
        #: The Connection the error concerns (set by the engine), as in 1.x.
        self.connection: object | None = None
        precise = precise_code(self.code)
        self.twilio_error: TwilioError | None = (
            TwilioError(precise) if precise is not None else None
        )
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        return f"{self.code} {self.name}: {self.message}"

    def to_payload(self) -> dict[str, Any]:
        """Return the ``{"code", "message"}`` object used on the wire."""
        return {"code": self.code, "message": self.message}


class SignalingError(TwilioError):
    """A failure of the signaling connection or protocol."""

    default_code = 53000


class ProtocolError(SignalingError):
    """A protocol violation; use one of the two subclasses."""


class LocalProtocolError(ProtocolError):
    """We attempted something the protocol does not allow."""

    default_code = 31000


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed (e.g. an invite without SDP)."""

    default_code = 31400


class UnknownMessageTypeError(RemoteProtocolError):
    """A frame of a type this client does not know; dropped, as the SDK does."""


class InvalidStateError(SignalingError):
    """A command is not allowed in the current state."""

    default_code = 31000


class AuthenticationError(SignalingError):
    """The token was rejected, malformed or expired (312xx, 201xx)."""

    default_code = 31201


class ConnectionLostError(SignalingError):
    """The signaling transport is closed or could not be reached."""

    default_code = 31005


class CallError(TwilioError):
    """A call ended with an error (declined, busy, unavailable, ...)."""


class MediaError(TwilioError):
    """A media (WebRTC) failure."""

    default_code = 53405


class NegotiationError(MediaError):
    """An SDP offer or answer could not be created or applied."""

    default_code = 53400


class AudioDeviceError(MediaError, OSError):
    """An audio device id is unknown, or the device failed."""

    default_code = 31402


class HardwareError(ApplianceError, OSError):
    """A GPIO or display failure."""


class CallLogError(ApplianceError):
    """The call log's database cannot be opened or written."""


class ControlError(ApplianceError):
    """No answer on the service's control socket: no service, or it went away."""


class ProvisioningError(ApplianceError):
    """Provisioning (token by USB stick or QR code) failed.

    Attributes:
        code: a Twilio-style numeric code from :data:`CATALOGUE` (the module
            docstring says which); 31000 when nothing more precise fits.
    """

    default_code = 31000

    def __init__(self, *args: object, code: int | None = None) -> None:
        super().__init__(*args)
        self.code = self.default_code if code is None else code


class UpdateError(ApplianceError):
    """A remote update could not be applied."""


class SignatureError(UpdateError):
    """An update's signature did not verify; never retried."""


_BY_RANGE: tuple[tuple[range, type[TwilioError]], ...] = (
    (range(20100, 20200), AuthenticationError),
    (range(31200, 31210), AuthenticationError),
    (range(31400, 31700), CallError),
    (range(31002, 31004), CallError),
    (range(31005, 31010), ConnectionLostError),
    (range(53000, 53100), SignalingError),
    (range(53400, 53500), MediaError),
)


def error_from_payload(
    raw: object, *, default_code: int, call_sid: str | None = None
) -> TwilioError:
    """Build the error of a wire ``{"code", "message"}`` object (may be malformed)."""
    code = raw.get("code") if isinstance(raw, dict) else None
    text = raw.get("message") if isinstance(raw, dict) else None
    return error_for_code(
        code if isinstance(code, int) else default_code,
        text if isinstance(text, str) else None,
        call_sid=call_sid,
    )


def error_for_code(
    code: int, message: str | None = None, *, call_sid: str | None = None
) -> TwilioError:
    """Build the most specific :class:`TwilioError` subclass for a code."""
    for codes, cls in _BY_RANGE:
        if code in codes:
            return cls(code, message, call_sid=call_sid)
    return TwilioError(code, message, call_sid=call_sid)
