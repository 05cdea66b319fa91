"""What a Device does for its calls and its Device.audio, off the Twilio API.

Each :class:`~appliance.phone.connection.Connection` talks back to its Device
through a :class:`~appliance.phone.connection.CallHost`, and Device.audio
through an :class:`~appliance.audio.collection.AudioHost`: send a message,
build the call's media, track the active call and its aliases, play the
chimes, emit the Device's events. :class:`DeviceCallHost` is that object. It
lives beside :mod:`appliance.phone.device` so the Twilio-facing Device keeps
only the Twilio API, and it is handed the Device's parts one by one rather
than the Device itself, so neither reaches into the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from appliance.audio.collection import AudioOptions
from appliance.errors import ApplianceError, TwilioError
from appliance.events import Emitter
from appliance.media.session import MediaSession
from appliance.phone.call import CallDirection, CallState
from appliance.phone.calls import CallBook
from appliance.phone.connection import Connection
from appliance.phone.gateway import media_config
from appliance.phone.options import DeviceOptions
from appliance.phone.ports import CallAudio, CallEnded, EngineEvent, MediaFactory
from appliance.signaling.messages import Message
from appliance.tasks import TaskSet

__all__ = ["DeviceCallHost"]

logger = logging.getLogger(__name__)


class DeviceCallHost:
    """The Device as its Connections and its Device.audio see it.

    A CallHost (``appliance.phone.connection``) and an AudioHost
    (``appliance.audio.collection``): public names for what the Device does
    for its parts, kept off the Twilio-facing Device.

    Args:
        options: returns the Device's options in force (``setup()`` may
            change them).
        calls: the Device's calls.
        audio: the calls' side of Device.audio.
        new_media: builds a call's media session.
        send: sends a signaling message (False without a session).
        tasks: the Device's tasks.
        events: the Device's event emitter.
        publish: publishes an engine fact to the Device's subscribers.
    """

    def __init__(
        self,
        *,
        options: Callable[[], DeviceOptions],
        calls: CallBook,
        audio: CallAudio,
        new_media: MediaFactory,
        send: Callable[[Message], bool],
        tasks: TaskSet,
        events: Emitter,
        publish: Callable[[EngineEvent], None],
    ) -> None:
        self._options = options
        self._calls = calls
        self._audio = audio
        self._new_media = new_media
        self._send = send
        self._tasks = tasks
        self._events = events
        self._publish = publish

    @property
    def enable_ringing_state(self) -> bool:
        return self._options().enable_ringing_state

    @property
    def signaling_grace_s(self) -> float:
        return self._options().max_call_signaling_timeout_ms / 1000

    @property
    def options(self) -> AudioOptions:
        return self._options()

    def send(self, message: Message) -> bool:
        return self._send(message)

    def new_media(self, connection: Connection) -> MediaSession:
        audio = self._audio
        # The call plays on the speaker devices and records from the audio
        # helper's input (selected device, else options.input_device).
        sink = audio.call_sink()
        source = audio.call_source()
        audio.stop_ring(connection)  # after the sink holds the device
        return self._new_media(
            media_config(self._options()), source, sink, connection.media_failed
        )

    async def before_accept(self, connection: Connection) -> None:
        calls = self._calls
        other = calls.active
        if other is not None and other is not connection:
            # allow_incoming_while_busy: the new call replaces the active one.
            # Shielded: a cancelled accept() must not stop that hang-up halfway
            # (closed, yet still the active call).
            await asyncio.shield(
                self._tasks.spawn(other.disconnect(), "device-replace-call")
            )
        # The caller may have given up while the other call was hung up: then
        # call_ended has run already, and a closed call must not become active.
        if connection.state is CallState.CONNECTING:
            calls.active = connection

    def call_opened(self, connection: Connection) -> None:
        self._calls.active = connection
        self._audio.call_opened(
            connection, outgoing=connection.direction is CallDirection.OUTGOING
        )

    def call_sid_changed(self, connection: Connection, old: str) -> None:
        # Keep the temporary TJS id as an alias: a hangup may still carry it
        # (signaling-protocol.md §2.3); call_ended removes every alias.
        self._calls.add(connection)

    def call_ended(self, connection: Connection) -> None:
        self._calls.remove(connection)
        self._audio.call_ended(connection)
        self._publish(CallEnded(connection))

    def digit_feedback(self, digit: str) -> None:
        try:
            self._audio.play_dtmf(digit)
        except ApplianceError as exc:  # a sound problem must not break the call
            logger.warning("local DTMF %s not played: %s", digit, exc)

    def emit(self, event: str, *args: Any) -> None:
        self._events.emit(event, *args)

    def report_error(self, error: TwilioError) -> None:
        self._events.emit("error", error)
