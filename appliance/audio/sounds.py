"""The seed's sounds: generated defaults, custom-sound decoding, playback cursors.

Pure module (numpy, and PyAV for decoding bytes already in memory): no files,
no network, no clock. What each sound is and how long it may last follows the
seed's "Available sound properties" table and signaling-protocol.md §7:

==============  ==========================================  ===============
name            default (generated here)                    rule
==============  ==========================================  ===============
``incoming``    the country's ring: ringback frequencies    loops until
                with the ring cadence (appliance.cadence)   stopped
``outgoing``    a short rising two-note chime               cut at 3 s
``disconnect``  a short falling three-note chime            cut at 3 s
``dtmf0``-      the digit's ITU-T Q.23 pair for 160 ms; or  cut at 1 s
``dtmf9``,      with ``fake_local_dtmf`` the off-standard
``dtmfs``,      pair of §7 for 100 ms, which a Q.24
``dtmfh``       detector rejects (both at gain 0.1)
==============  ==========================================  ===============

Twilio's defaults are recordings fetched from its CDN; generating them keeps
the phone working offline and avoids shipping third-party audio.

Example::

    ring = default_sound("incoming", country="GB")
    cursor = SoundCursor(ring, gain=0.5)
    frame = cursor.next_frame()      # None once a non-looping sound has ended
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from appliance.cadence import tones_for
from appliance.media.dtmf import TONE_S
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples
from appliance.media.tones import DTMF_FREQUENCIES

__all__ = [
    "DIGIT_SOUNDS",
    "FAKE_DTMF_FREQUENCIES",
    "FAKE_DTMF_GAIN",
    "FAKE_DTMF_S",
    "MAX_DURATION_S",
    "SOUND_NAMES",
    "Sound",
    "SoundCursor",
    "custom_sound",
    "decode_audio",
    "default_sound",
    "digit_sound_name",
    "dtmf_sound",
    "progress_sound",
    "ring_sound",
]

#: Longest play time per sound (seed table): None = loops until stopped.
MAX_DURATION_S: dict[str, float | None] = {
    "incoming": None,
    "outgoing": 3.0,
    "disconnect": 3.0,
    **{f"dtmf{d}": 1.0 for d in "0123456789"},
    "dtmfs": 1.0,
    "dtmfh": 1.0,
}

#: Sound name -> keypad digit.
DIGIT_SOUNDS: dict[str, str] = {
    **{f"dtmf{d}": d for d in "0123456789"},
    "dtmfs": "*",
    "dtmfh": "#",
}

#: Twilio's deliberately off-standard local feedback pairs (signaling-protocol.md
#: §7, ``dialtonePlayer.ts`` ``bandFrequencies``), as (low, high) Hz. Each row
#: tone is 2-3.3 % off its Q.23 value, outside Q.24's ±1.5 % acceptance, so a
#: microphone hearing the click-back does not send the digit twice.
FAKE_DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (720, 1230),
    "2": (720, 1360),
    "3": (720, 1480),
    "4": (790, 1230),
    "5": (790, 1360),
    "6": (790, 1480),
    "7": (870, 1230),
    "8": (870, 1360),
    "9": (870, 1480),
    "*": (960, 1230),
    "0": (960, 1360),
    "#": (960, 1480),
}
#: The fake tones last 100 ms at gain 0.1 per oscillator (§7).
FAKE_DTMF_S = 0.100
FAKE_DTMF_GAIN = 0.1
#: Q.23 feedback: as long as a sent digit (appliance.media.dtmf), at the same
#: gain 0.1 (-20 dBFS per tone) as the fake pairs: key feedback is a sidetone
#: and must stay well below the far end's voice.
DTMF_AMPLITUDE = 0.1
RING_AMPLITUDE = 0.2
#: Dial tone and ringback in the earpiece: -20 dBFS per tone, a sidetone level.
PROGRESS_AMPLITUDE = 0.1
CHIME_AMPLITUDE = 0.3
#: Raised-cosine edges on every tone burst: hard edges click.
RAMP_S = 0.005

_INT16_MAX = 32767

_Float = npt.NDArray[np.float64]


#: Sound names of the seed's "Available sound properties" table.
SOUND_NAMES = (
    "incoming",
    "outgoing",
    "disconnect",
    "dtmf0",
    "dtmf1",
    "dtmf2",
    "dtmf3",
    "dtmf4",
    "dtmf5",
    "dtmf6",
    "dtmf7",
    "dtmf8",
    "dtmf9",
    "dtmfs",
    "dtmfh",
)


@dataclass(frozen=True, eq=False)
class Sound:
    """A sound ready to play: 48 kHz mono int16.

    Attributes:
        name: the seed's sound name (``incoming``, ``dtmf5``...).
        samples: the audio, already cut to the sound's maximum duration.
        loop: whether playback starts again at the end (``incoming``).
        custom: True if it came from the ``sounds`` option.
    """

    name: str
    samples: Samples
    loop: bool = False
    custom: bool = False

    @property
    def duration_s(self) -> float:
        """Length of one pass, in seconds."""
        return self.samples.size / SAMPLE_RATE


def _to_int16(signal: _Float) -> Samples:
    clipped = np.clip(np.rint(signal * _INT16_MAX), -_INT16_MAX - 1, _INT16_MAX)
    out: Samples = clipped.astype(np.int16)
    return out


def _burst(freqs: tuple[float, ...], seconds: float, amplitude: float) -> _Float:
    """Sum of sines with raised-cosine edges, as float (full scale 1.0)."""
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    signal = np.zeros(n, dtype=np.float64)
    for freq in freqs:
        signal += amplitude * np.sin(2.0 * math.pi * freq * t)
    ramp = min(round(RAMP_S * SAMPLE_RATE), n // 2)
    if ramp > 0:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, ramp))
        signal[:ramp] *= edge
        signal[n - ramp :] *= edge[::-1]
    return signal


def _cut(name: str, samples: Samples) -> Samples:
    limit = MAX_DURATION_S[name]
    if limit is None:
        return samples
    return samples[: round(limit * SAMPLE_RATE)]


def ring_sound(country: str = "US") -> Sound:
    """One period of the country's ring, as the looping ``incoming`` sound.

    The desk phone's ringer uses the country's ringback frequencies (US
    440+480 Hz) on the ring cadence (US 2 s on, 4 s off), so the loudspeaker
    rings in the pattern people there know.

    Raises:
        ConfigError: unknown country (appliance.cadence.tones_for).
    """
    tones = tones_for(country)
    parts = []
    for index, ms in enumerate(tones.ring.on_off_ms):
        seconds = ms / 1000.0
        if index % 2 == 0 and ms > 0:
            parts.append(_burst(tones.ringback.frequencies_hz, seconds, RING_AMPLITUDE))
        else:
            parts.append(np.zeros(round(seconds * SAMPLE_RATE)))
    return Sound("incoming", _to_int16(np.concatenate(parts)), loop=True)


def progress_sound(name: str, country: str = "US") -> Sound:
    """A local call-progress tone, looping: ``dialtone`` or ``ringback``.

    Not one of the seed's sounds: Twilio's gateway plays ringback as early
    media and has no dial tone; a desk phone makes both itself, from the
    country's table (appliance.cadence). A continuous tone is one second of
    whole cycles (the tables use whole hertz), so the loop joins without a
    click; a cadenced one is one period of bursts and silences.

    Raises:
        KeyError: another name.
        ConfigError: unknown country.
    """
    tones = tones_for(country)
    spec = {"dialtone": tones.dial, "ringback": tones.ringback}[name]
    if spec.cadence.is_constant:
        t = np.arange(SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
        signal = sum(
            (np.sin(2 * np.pi * f * t) for f in spec.frequencies_hz),
            np.zeros(SAMPLE_RATE),
        )
        return Sound(name, _to_int16(signal * PROGRESS_AMPLITUDE), loop=True)
    parts = []
    for index, ms in enumerate(spec.cadence.on_off_ms):
        seconds = ms / 1000.0
        if index % 2 == 0 and ms > 0:
            parts.append(_burst(spec.frequencies_hz, seconds, PROGRESS_AMPLITUDE))
        else:
            parts.append(np.zeros(round(seconds * SAMPLE_RATE)))
    return Sound(name, _to_int16(np.concatenate(parts)), loop=True)


def _chime(name: str, notes: tuple[tuple[float, float], ...]) -> Sound:
    """Notes (Hz, seconds), each decaying exponentially like a struck bell."""
    parts = []
    for freq, seconds in notes:
        note = _burst((freq, 2.0 * freq), seconds, CHIME_AMPLITUDE * 0.7)
        decay = np.exp(-np.arange(note.size) / (0.35 * note.size))
        parts.append(note * decay)
    return Sound(name, _cut(name, _to_int16(np.concatenate(parts))))


def dtmf_sound(digit: str, *, fake: bool = False) -> Sound:
    """Local feedback for a keypad digit (0-9 * #).

    Args:
        digit: the key.
        fake: use the off-standard pair of §7 (100 ms, gain 0.1) instead of
            the Q.23 pair (160 ms, gain 0.1).

    Raises:
        KeyError: not a keypad digit.
    """
    name = digit_sound_name(digit)
    if fake:
        low, high = FAKE_DTMF_FREQUENCIES[digit]
        signal = _burst((low, high), FAKE_DTMF_S, FAKE_DTMF_GAIN)
    else:
        low, high = DTMF_FREQUENCIES[digit]
        signal = _burst((low, high), TONE_S, DTMF_AMPLITUDE)
    return Sound(name, _cut(name, _to_int16(signal)))


def digit_sound_name(digit: str) -> str:
    """``"5"`` -> ``"dtmf5"``, ``"*"`` -> ``"dtmfs"``, ``"#"`` -> ``"dtmfh"``.

    Raises:
        KeyError: not a keypad digit.
    """
    for name, key in DIGIT_SOUNDS.items():
        if key == digit:
            return name
    raise KeyError(f"not a keypad digit: {digit!r}")


def default_sound(name: str, *, country: str = "US", fake_dtmf: bool = False) -> Sound:
    """The generated default for one of :data:`SOUND_NAMES`.

    Raises:
        KeyError: unknown sound name.
        ConfigError: unknown country.
    """
    if name == "incoming":
        return ring_sound(country)
    if name == "outgoing":
        return _chime(name, ((660.0, 0.12), (990.0, 0.22)))
    if name == "disconnect":
        return _chime(name, ((990.0, 0.12), (660.0, 0.12), (440.0, 0.25)))
    if name in DIGIT_SOUNDS:
        return dtmf_sound(DIGIT_SOUNDS[name], fake=fake_dtmf)
    raise KeyError(f"unknown sound {name!r}")


def decode_audio(data: bytes) -> Samples:
    """Decode a sound file held in memory (WAV, MP3, Ogg...) to 48 kHz mono int16.

    Raises:
        ValueError: the bytes are not a decodable audio file, or hold no audio.
    """
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("the file has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except ValueError:
        raise
    except (av.FFmpegError, OSError, EOFError) as exc:
        raise ValueError(f"not a decodable audio file ({exc})") from None
    if not chunks:
        raise ValueError("the file holds no audio")
    samples: Samples = np.concatenate(chunks).astype(np.int16, copy=False)
    if samples.size == 0:
        raise ValueError("the file holds no audio")
    return samples


def custom_sound(name: str, samples: Samples) -> Sound:
    """Wrap decoded audio as sound ``name``, cut to the seed's maximum duration.

    Raises:
        KeyError: unknown sound name.
    """
    if name not in MAX_DURATION_S:
        raise KeyError(f"unknown sound {name!r}")
    return Sound(name, _cut(name, samples), loop=name == "incoming", custom=True)


class SoundCursor:
    """Reads a :class:`Sound` frame by frame, with gain; loops if the sound loops.

    Args:
        sound: what to play.
        gain: linear factor applied to every sample (clipped to int16).
    """

    def __init__(self, sound: Sound, gain: float = 1.0) -> None:
        self.sound = sound
        self.gain = gain
        self.position = 0  # samples read so far, over all passes
        self._stopped = False

    @property
    def finished(self) -> bool:
        """Whether no more frames will come."""
        if self._stopped:
            return True
        if self.sound.loop:
            return self.sound.samples.size == 0
        return self.position >= self.sound.samples.size

    @property
    def elapsed_s(self) -> float:
        """Audio played so far, in seconds."""
        return self.position / SAMPLE_RATE

    def stop(self) -> None:
        """End playback now; later :meth:`next_frame` calls return None."""
        self._stopped = True

    def next_frame(self, n: int = FRAME_SAMPLES) -> Samples | None:
        """Return the next ``n`` samples (zero-padded at the end), or None."""
        if self.finished:
            return None
        data = self.sound.samples
        if self.sound.loop:
            start = self.position % data.size
            index = (start + np.arange(n)) % data.size
            chunk = data[index]
        else:
            chunk = data[self.position : self.position + n]
            if chunk.size < n:
                chunk = np.concatenate([chunk, np.zeros(n - chunk.size, np.int16)])
        self.position += n
        if self.gain == 1.0:
            return chunk.copy()
        scaled = np.clip(np.rint(chunk * self.gain), -_INT16_MAX - 1, _INT16_MAX)
        out: Samples = scaled.astype(np.int16)
        return out
