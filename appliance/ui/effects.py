"""What the panel sounds and lights like: tones, volume, ringer and LEDs.

The front panel's local feedback (a key's DTMF tone, the dial tone and
ringback, the volume of Device.audio's speaker and ringtone devices, the
ringer and status LED patterns) takes effect at once, never queued behind the
engine. It is kept apart from :mod:`appliance.ui.controller`, which moves
facts and commands, so that the controller reads as the Panel's adapter and
this reads as the list of what the user hears and sees besides the screen.
"""

from __future__ import annotations

import logging

from appliance.audio.mixer import Playback
from appliance.audio.sounds import progress_sound
from appliance.errors import ApplianceError
from appliance.hardware.ports import PanelIO
from appliance.phone.device import Device
from appliance.ui.commands import SetVolume
from appliance.ui.panel import Panel
from appliance.ui.progress import local_tone

__all__ = ["PanelEffects"]

logger = logging.getLogger(__name__)


class PanelEffects:
    """Plays the panel's sounds on ``device.audio`` and sets ``io``'s lights.

    Args:
        device: whose ``audio`` plays the tones and gets the volumes.
        io: the ringer and LEDs, or ``None``.
    """

    def __init__(self, device: Device, io: PanelIO | None) -> None:
        self._device = device
        self._io = io
        self._tone: tuple[str, Playback] | None = None  # dial tone or ringback

    @property
    def progress_tone(self) -> str | None:
        """The local tone playing: ``dialtone``, ``ringback`` or None."""
        return self._tone[0] if self._tone and self._tone[1].playing else None

    def show(self, panel: Panel) -> None:
        """Set the ringer, the status LED, the tones' country and the progress
        tone ``panel`` wants."""
        audio = self._device.audio
        if audio.country != panel.country:  # the next ring and tone use it
            audio.country = panel.country
        if self._io is not None:
            self._io.set_ringer(panel.ringer_pattern())
            self._io.set_status_led(panel.status_led().value)
        self.play_tone(local_tone(panel.view()))

    def play_local(self, digit: str) -> None:
        """Play a key's DTMF tone locally (feedback while dialling)."""
        try:
            self._device.audio.play_dtmf(digit)
        except ApplianceError as exc:
            logger.warning("local DTMF %s not played: %s", digit, exc)

    def apply_volume(self, command: SetVolume) -> None:
        """Set a role's volume on Device.audio (and the ringer's audibility)."""
        audio = self._device.audio
        speaker = command.role == "speaker"
        collection = audio.speaker_devices if speaker else audio.ringtone_devices
        # Within the collection's 0..4 range by construction (+6 dB at most).
        collection.volume = command.gain
        if not speaker and self._io is not None:
            self._io.set_ringer_audible(command.level > 0)

    def play_tone(self, name: str | None) -> None:
        """Play the local progress tone ``name`` (None: silence) if it changed."""
        if (self._tone[0] if self._tone else None) == name:
            return
        if self._tone is not None:
            self._tone[1].stop()
            self._tone = None
        if name is not None:
            audio = self._device.audio
            try:
                self._tone = (name, audio.play(progress_sound(name, audio.country)))
            except ApplianceError as exc:
                logger.warning("%s not played: %s", name, exc)
