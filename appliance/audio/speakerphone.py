"""Where the speakerphone processing meets the devices of Device.audio.

:class:`~appliance.media.echo.VoiceProcessor` needs two streams: what the
loudspeaker plays and what the microphone hears. Both pass through
Device.audio: every mixed frame written to an output device is reported by
the output router (``OutputRouter.on_frame``), and every microphone frame
goes through the input path (``InputPath.process``) before calls and the
``input_volume`` meter see it. :class:`Speakerphone` joins the two: frames
written to the first speaker device (the one that carries the call and so
the echo) become the reference, and microphone frames are processed.

Which processing runs follows ``audio_constraints`` (the Device option, or
``device.audio.set_audio_constraints`` which overrides it). The option's
default, ``True``, means the platform's default, given by ``default_on``:
off unless the composition root says this phone is a speakerphone, because a
headset or a USB speakerphone usually cancels echo in its own DSP and a
second canceller only costs CPU and near-end quality. A mapping turns on
exactly the features it sets to True.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from appliance.media.echo import ProcessingSettings, VoiceProcessor
from appliance.media.frames import Samples

__all__ = ["Speakerphone", "settings_for"]

logger = logging.getLogger(__name__)

_OFF = ProcessingSettings(False, False, False)


def settings_for(
    constraints: bool | Mapping[str, Any], *, default_on: bool
) -> ProcessingSettings:
    """The processing for ``audio_constraints`` (see the module docstring)."""
    if isinstance(constraints, bool):
        on = constraints and default_on
        return ProcessingSettings(on, on, on)
    return ProcessingSettings(
        echo_cancellation=constraints.get("echo_cancellation") is True,
        noise_suppression=constraints.get("noise_suppression") is True,
        auto_gain_control=constraints.get("auto_gain_control") is True,
    )


class Speakerphone:
    """Owns the processor; fed by the output router and the input path.

    Args:
        speaker_device: returns the id of the device whose output is the
            echo reference (the first speaker device), or None.
    """

    def __init__(self, speaker_device: Callable[[], str | None]) -> None:
        self._speaker_device = speaker_device
        self._processor = VoiceProcessor(_OFF)

    @property
    def settings(self) -> ProcessingSettings:
        """The processing in force."""
        return self._processor.settings

    @property
    def applied(self) -> bool:
        """Whether any processing runs on the microphone."""
        return self._processor.active

    def configure(self, settings: ProcessingSettings) -> None:
        """Run ``settings`` from the next frame on (the state starts afresh).

        Where libspeexdsp is missing the input stays unprocessed (logged).
        """
        if settings == self._processor.settings:
            return
        try:
            processor = VoiceProcessor(settings)
        except RuntimeError as exc:
            logger.warning("speakerphone processing unavailable: %s", exc)
            processor = VoiceProcessor(_OFF)
        old, self._processor = self._processor, processor
        old.close()
        logger.info("microphone processing: %s", settings)

    def played(self, device_id: str, frame: Samples) -> None:
        """A frame was written to ``device_id`` (``OutputRouter.on_frame``)."""
        if self._processor.active and device_id == self._speaker_device():
            self._processor.far(frame)

    def process(self, frame: Samples) -> Samples:
        """One microphone frame, processed (``InputPath.process``).

        A frame of an odd size (not whole 20 ms) passes unprocessed.
        """
        try:
            return self._processor.near(frame)
        except ValueError as exc:
            logger.debug("microphone frame not processed: %s", exc)
            return frame

    def close(self) -> None:
        """Free the processor; the input is passed through afterwards."""
        old, self._processor = self._processor, VoiceProcessor(_OFF)
        old.close()
