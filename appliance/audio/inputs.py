"""The microphone side of Device.audio: one open input, metered, tapped by calls.

One input device is open at a time: the one chosen with
``set_input_device``, else the Device's ``input_device`` while a call needs
it. One task reads it, emits ``input_volume`` (0..1 from -100..-30 dBFS, at
most 60 per second; frames that arrive in a burst under load are coalesced)
and hands each frame to the calls' taps. A call reads its
:class:`CallSource` tap, never the device, so switching the input during a
call swaps the device under the call without touching the media.

An input that fails (read error, or an ALSA source that reports its card
gone) falls back to the default device, else to silence, so the call keeps
its clock; the device is tried again when a card appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from appliance.audio.collection import AudioDeviceInfo, AudioOptions
from appliance.audio.listing import DeviceListing
from appliance.errors import AudioDeviceError, InvalidArgumentError
from appliance.media.frames import AudioSource, Samples
from appliance.media.levels import level_from_dbfs, rms_dbfs
from appliance.tasks import TaskSet

__all__ = ["INPUT_VOLUME_MAX_RATE", "TAP_FRAMES", "CallSource", "InputPath"]

logger = logging.getLogger(__name__)

#: The seed: input_volume "up to 60 times per second".
INPUT_VOLUME_MAX_RATE = 60.0
#: Frames a call's input tap keeps for a late reader (drop oldest).
TAP_FRAMES = 5


class CallSource:
    """A call's AudioSource: frames from the shared input, whatever device it is."""

    def __init__(self, path: InputPath) -> None:
        self._path = path
        self._frames: deque[Samples] = deque(maxlen=TAP_FRAMES)
        self._waiter: asyncio.Future[None] | None = None
        self.reading = False
        self.closed = False

    def push(self, frame: Samples) -> None:
        """Take one frame from the input (drops the oldest beyond TAP_FRAMES)."""
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_frame(self) -> Samples:
        """The next frame of whichever input device is current.

        Raises:
            AudioDeviceError: the tap is closed.
        """
        if self.closed:
            raise AudioDeviceError(message="read from a closed call input")
        if not self.reading:
            # Start the device on the first read, not when the call is
            # created: a file: source then plays from its start in the call.
            self.reading = True
            self._path.wanted()
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self.closed:
                raise AudioDeviceError(message="read from a closed call input")
        return self._frames.popleft()

    def close(self) -> None:
        """End the tap (the call's media closed it)."""
        if self.closed:
            return
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._path.tap_closed(self)


class InputPath:
    """The input side of Device.audio (see the module docstring).

    Args:
        listing: the devices on offer.
        options: the Device's options in force (``input_device``).
        source_opener: opens an input device id.
        emit: emits ``input_volume`` on Device.audio.
    """

    def __init__(
        self,
        listing: DeviceListing,
        options: Callable[[], AudioOptions],
        source_opener: Callable[[str], AudioSource],
        emit: Callable[..., None],
    ) -> None:
        self._listing = listing
        self._options = options
        self._open_source = source_opener
        self._emit = emit
        self._selected: str | None = None
        self._source: AudioSource | None = None
        self._current: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._taps: list[CallSource] = []
        self._last_volume = -float("inf")
        self._tasks = TaskSet(logger, "audio input")
        #: Applied to each frame before calls and the meter get it (the
        #: speakerphone processing, ``appliance.media.echo``), or None.
        self.process: Callable[[Samples], Samples] | None = None

    @property
    def current_id(self) -> str | None:
        """The id of the device open now (``null`` after a fallback), or None."""
        return self._current

    @property
    def selected(self) -> AudioDeviceInfo | None:
        """The device chosen with :meth:`select`, or None."""
        if self._selected is None:
            return None
        return self._listing.input_info(self._selected)

    async def select(self, device_id: str) -> None:
        """Use ``device_id`` as the microphone, now and for later calls.

        Raises:
            InvalidArgumentError: not a non-empty string.
            AudioDeviceError: (31402) unknown device, or it cannot be opened.
        """
        if not isinstance(device_id, str) or not device_id:
            raise InvalidArgumentError("device_id", "must be a non-empty string")
        await self._listing.check((device_id,), "input")
        await self._switch(self._resolve(device_id))
        self._selected = device_id
        self._start_reader()

    async def unselect(self) -> None:
        """Forget the selected input; stops metering. A call goes back to default."""
        self._selected = None
        if self._taps:
            await self._switch(self._options().input_device)
            if not any(tap.reading for tap in self._taps):
                await self._stop_reader()
        else:
            await self._close()

    def call_source(self) -> CallSource:
        """A source for a new call's media (the current input device)."""
        tap = CallSource(self)
        self._taps.append(tap)
        return tap

    def wanted(self) -> None:
        """A call started reading: make sure the input runs."""
        if self._source is None:
            self._open_with_fallback(self._target())
        self._start_reader()

    def tap_closed(self, tap: CallSource) -> None:
        """A call's tap closed; the device closes when nothing needs it."""
        if tap in self._taps:
            self._taps.remove(tap)
        if not self._taps and self._selected is None:
            self._tasks.spawn(self._close(), "audio-input-close")

    def lose(self, removed: set[str]) -> list[AudioDeviceInfo]:
        """Drop the input if its device is among ``removed``; return it if so."""
        if self._current is None or self._current not in removed:
            return []
        lost = self._listing.input_info(self._selected or self._current)
        self._tasks.spawn(self._replace_lost(), "audio-input-lost")
        return [lost]

    async def devices_added(self) -> None:
        """A card appeared: an input that fell back to silence may have it again."""
        target = self._target()
        in_use = bool(self._taps) or self._selected is not None
        if in_use and self._current == "null" and target != "null":
            try:
                await self._switch(target)
            except AudioDeviceError as exc:
                logger.info("audio input %s still unusable: %s", target, exc)

    async def close(self) -> None:
        """Close every tap and the device (Device.destroy)."""
        for tap in list(self._taps):
            tap.close()
        await self._tasks.close()
        await self._close()
        self._selected = None

    # ---- internals ----------------------------------------------------------

    def _resolve(self, device_id: str) -> str:
        return self._options().input_device if device_id == "default" else device_id

    def _target(self) -> str:
        if self._selected is not None:
            return self._resolve(self._selected)
        return self._options().input_device

    async def _switch(self, device_id: str) -> None:
        """Open ``device_id`` and make it the input (the old one is closed).

        Raises:
            AudioDeviceError: cannot open; the old input stays.
        """
        if device_id == self._current and self._source is not None:
            return
        source = self._open_source(device_id)
        running = self._reader is not None
        await self._stop_reader()
        old, self._source, self._current = self._source, source, device_id
        if old is not None:
            old.close()
        logger.info("audio input: %s", device_id)
        if running:
            self._start_reader()

    def _open_with_fallback(self, device_id: str) -> None:
        for candidate in dict.fromkeys((device_id, self._options().input_device)):
            try:
                self._source = self._open_source(candidate)
                self._current = candidate
                return
            except AudioDeviceError as exc:
                logger.warning("cannot open input %s: %s", candidate, exc.message)
        # Last resort: silence, so the call still runs (the far end hears nothing).
        self._source = self._open_source("null")
        self._current = "null"

    def _start_reader(self) -> None:
        if self._source is None:
            return
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read(self._source), name="audio-input"
            )

    async def _stop_reader(self) -> None:
        task, self._reader = self._reader, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close(self) -> None:
        await self._stop_reader()
        source, self._source, self._current = self._source, None, None
        if source is not None:
            source.close()

    async def _read(self, source: AudioSource) -> None:
        min_interval = 1.0 / INPUT_VOLUME_MAX_RATE
        while True:
            try:
                frame = await source.read_frame()
            except AudioDeviceError as exc:
                logger.warning("audio input %s failed: %s", self._current, exc)
                self._reader = None
                await self._lost()
                return
            if getattr(source, "failed", False):
                # An ALSA source that lost its device reads paced silence
                # rather than raising (the call keeps its clock); switch now,
                # not when the card leaves the listing (it may never).
                logger.warning("audio input %s lost", self._current)
                self._reader = None
                await self._lost()
                return
            if self.process is not None:
                frame = self.process(frame)
            for tap in list(self._taps):
                tap.push(frame)
            now = time.monotonic()
            # At most 60 events per second; when the loop is late, frames
            # queued in the device arrive back to back and only the last of
            # a burst is reported (the seed: "scale down on slower devices").
            if now - self._last_volume >= min_interval * 0.95:
                self._last_volume = now
                self._emit("input_volume", level_from_dbfs(rms_dbfs(frame)))

    async def _replace_lost(self) -> None:
        await self._stop_reader()
        await self._lost()

    async def _lost(self) -> None:
        """The input failed: fall back to the default device, else silence."""
        lost = self._current
        source, self._source, self._current = self._source, None, None
        if source is not None:
            source.close()
        if self._selected is not None:
            self._selected = "default"
        if self._taps or self._selected is not None:
            target = self._options().input_device
            self._open_with_fallback("null" if target == lost else target)
            self._start_reader()
