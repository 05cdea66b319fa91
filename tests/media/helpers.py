"""Signal analysis and small real fakes shared by the media tests."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np

from appliance.media.frames import SAMPLE_RATE, Samples
from appliance.media.levels import rms_dbfs


def dominant_frequency(samples: Samples, rate: int = SAMPLE_RATE) -> float:
    """Return the frequency (Hz) of the strongest FFT bin, DC excluded."""
    values = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(values * np.hanning(values.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * rate / values.size


def read_wav(path: Path) -> tuple[Samples, int, int]:
    """Return (samples, rate, channels) of a 16-bit WAV file."""
    with wave.open(str(path), "rb") as reader:
        assert reader.getsampwidth() == 2
        raw = reader.readframes(reader.getnframes())
        return (
            np.frombuffer(raw, dtype="<i2").astype(np.int16),
            reader.getframerate(),
            reader.getnchannels(),
        )


def write_wav(path: Path, samples: Samples, rate: int, channels: int = 1) -> None:
    """Write interleaved int16 ``samples`` as a 16-bit PCM WAV."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())


class LevelLogSink:
    """An AudioSink that logs (monotonic time, dBFS) for every frame it gets."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, float]] = []
        self.closed = False

    async def write_frame(self, samples: Samples) -> None:
        self.entries.append((time.monotonic(), rms_dbfs(samples)))

    def close(self) -> None:
        self.closed = True

    def levels_between(self, start: float, end: float) -> list[float]:
        return [db for t, db in self.entries if start <= t < end]
