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
seam: :class:`appliance.phone.connection.CallHost`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from appliance.media.frames import AudioSink, AudioSource
from appliance.media.session import MediaConfig, MediaSession
from appliance.signaling.client import SignalingClient
from appliance.signaling.protocol import ClientProtocol, Event

__all__ = [
    "CallAudio",
    "MediaFactory",
    "SignalingFactory",
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
