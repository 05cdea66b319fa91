"""The engine's seams: what a Device is given, as public Protocols and factories.

The Device (``appliance.phone.device``) owns calls; it does not build the
parts it talks through. The composition root (``appliance.app``) builds them
and hands them in, and the plain ``Device(**options)`` form of the Twilio API
takes the defaults named here:

============================  ================================================
:class:`CallAudio`            Device.audio as the engine uses it during a call
                              (``appliance.audio.helper.AudioHelper``)
:data:`SignalingFactory`      builds the signaling session from the pure
                              protocol core (``SignalingClient``)
:data:`MediaFactory`          builds one call's media session
                              (``MediaSession``)
============================  ================================================

What a Connection needs from its Device is the other direction of the same
seam: :class:`appliance.phone.connection.CallHost`. And what the Device tells
the firmware's own parts beside the Twilio string events are typed facts
(:data:`EngineEvent`, through ``Device.subscribe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from appliance.media.frames import AudioSink, AudioSource
from appliance.media.session import MediaConfig, MediaSession
from appliance.phone.connection import Connection
from appliance.signaling.client import SignalingClient
from appliance.signaling.protocol import ClientProtocol, Event

__all__ = [
    "CallAudio",
    "CallEnded",
    "CallOffered",
    "CallPlaced",
    "CallsChanged",
    "EngineEvent",
    "EngineListener",
    "MediaFactory",
    "SignalingFactory",
    "default_media",
    "default_signaling",
]


class CallAudio(Protocol):
    """What the Device needs from its audio layer while calls come and go.

    ``call`` is any object that identifies one call (the Connection); the
    audio layer only compares it.
    """

    def call_source(self) -> AudioSource:
        """A source for a new call's media (the current microphone)."""
        ...

    def call_sink(self) -> AudioSink:
        """A sink for a new call's media (every speaker device).

        Raises:
            AudioDeviceError: no speaker device can be opened.
        """
        ...

    async def ring(
        self, call: object, *, ring: bool, wanted: Callable[[], bool]
    ) -> None:
        """Ring for ``call``; return once the ring plays (2 s at the latest)."""
        ...

    def stop_ring(self, call: object) -> None:
        """Stop ringing for ``call``."""
        ...

    def call_opened(self, call: object, *, outgoing: bool) -> None:
        """``call`` was answered."""
        ...

    def call_ended(self, call: object) -> None:
        """``call`` ended."""
        ...

    def play_dtmf(self, digit: str) -> object:
        """Play local key feedback for ``digit``."""
        ...


#: Builds the signaling session of a Device around its protocol core; the
#: callable receives each protocol event on the loop.
SignalingFactory = Callable[[ClientProtocol, Callable[[Event], None]], SignalingClient]

#: Builds one call's media between a source and a sink; ``on_failed`` is
#: called once if ICE or DTLS fails.
MediaFactory = Callable[
    [MediaConfig, AudioSource, AudioSink, Callable[[], None]], MediaSession
]


@dataclass(frozen=True)
class CallOffered:
    """An incoming call arrived and its ring is starting.

    Twilio's ``incoming`` follows once the ring plays (2 s at the latest,
    signaling-protocol.md §7); the front panel rings its LED at this fact
    instead, so a slow sound card or a ringtone still downloading never
    delays the visual ring.
    """

    connection: Connection


@dataclass(frozen=True)
class CallsChanged:
    """A call began or ended: ``calls`` are not ended now (ringing, being
    placed or in progress). The updater waits for zero before it installs.
    """

    calls: int


@dataclass(frozen=True)
class CallPlaced:
    """We placed an outgoing call (:meth:`Device.connect`); the call log's cue."""

    connection: Connection


@dataclass(frozen=True)
class CallEnded:
    """A call ended in any way (hung up, rejected, ignored, cancelled, failed).

    Twilio's events name each way differently; the call log needs the one
    moment the call is over.
    """

    connection: Connection


#: Typed facts for the firmware's own parts; the Twilio API stays the string
#: events of :meth:`Device.on` (style 4.14: typed inside, Twilio outside).
EngineEvent = CallOffered | CallsChanged | CallPlaced | CallEnded
EngineListener = Callable[[EngineEvent], None]


def default_signaling(
    protocol: ClientProtocol, on_event: Callable[[Event], None]
) -> SignalingClient:
    """The signaling session over websockets (:data:`SignalingFactory`)."""
    return SignalingClient(protocol, on_event=on_event)


def default_media(
    config: MediaConfig,
    source: AudioSource,
    sink: AudioSink,
    on_failed: Callable[[], None],
) -> MediaSession:
    """One call's aiortc media (:data:`MediaFactory`)."""
    return MediaSession(config, source, sink, on_failed=on_failed)
