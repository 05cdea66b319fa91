"""What the front panel asks of the engine and the phone: the
:class:`~appliance.ui.panel.Panel`'s outputs, drained with
:meth:`~appliance.ui.panel.Panel.commands_to_send` and carried out by the
controller (:mod:`appliance.ui.controller`).

Plain frozen values, kept apart from the state machine so that the table of
what the panel can ask for reads in one place; :mod:`appliance.ui.panel`
re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Accept",
    "Command",
    "Decline",
    "Dial",
    "Hangup",
    "Ignore",
    "MarkMissedSeen",
    "PlayLocalDtmf",
    "Reject",
    "ResetCancelled",
    "ResetProvisioning",
    "SendDigits",
    "SetCountry",
    "SetDirectory",
    "SetDnd",
    "SetMute",
    "SetVolume",
    "Setup",
]


@dataclass(frozen=True)
class Setup:
    """Run the engine's setup: connect and register (the Ready gesture)."""


@dataclass(frozen=True)
class Dial:
    """Place an outgoing call to ``to`` (``client:NAME`` or a number as typed)."""

    to: str


@dataclass(frozen=True)
class Accept:
    """Answer the ringing incoming call."""


@dataclass(frozen=True)
class Reject:
    """Reject the ringing incoming call."""


@dataclass(frozen=True)
class Ignore:
    """Stop ringing locally without rejecting (the caller keeps hearing ringback)."""


@dataclass(frozen=True)
class Hangup:
    """End the current call (outgoing before answer, or connected)."""


@dataclass(frozen=True)
class SendDigits:
    """Send DTMF digits on the current call."""

    digits: str


@dataclass(frozen=True)
class SetMute:
    """Mute or unmute the microphone."""

    muted: bool


@dataclass(frozen=True)
class PlayLocalDtmf:
    """Play the DTMF tone locally as key feedback."""

    digit: str


@dataclass(frozen=True)
class ResetProvisioning:
    """Hangup was held on the confirmation screen: forget the credential."""


@dataclass(frozen=True)
class ResetCancelled:
    """The confirmation screen was left without the long press."""


@dataclass(frozen=True)
class SetVolume:
    """Set the gain of ``role`` (``speaker`` or ``ringtone``) to ``level``.

    ``gain`` is the linear factor for the audio mixer (0.0 = silent).
    """

    role: str
    level: int
    gain: float


@dataclass(frozen=True)
class Decline:
    """Do-not-disturb turns the offered call away: rejected (busy) or, with
    ``silent``, ignored (the caller rings on; nothing rings here)."""

    silent: bool


@dataclass(frozen=True)
class SetDnd:
    """Do-not-disturb was turned on or off on the panel (to be saved)."""

    on: bool


@dataclass(frozen=True)
class SetDirectory:
    """The directory was edited (the web page): every entry, to be saved."""

    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetCountry:
    """The country of the tones was chosen (the web page), to be saved."""

    country: str


@dataclass(frozen=True)
class MarkMissedSeen:
    """The log was opened: the missed calls are seen (the LED stops)."""


Command = (
    Setup
    | Dial
    | Accept
    | Reject
    | Ignore
    | Hangup
    | SendDigits
    | SetMute
    | PlayLocalDtmf
    | SetVolume
    | ResetProvisioning
    | ResetCancelled
    | Decline
    | SetDnd
    | SetDirectory
    | SetCountry
    | MarkMissedSeen
)
