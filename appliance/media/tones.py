"""Tone synthesis: sines with continuous phase, and the DTMF frequency table.

Pure module (numpy only). A :class:`ToneGenerator` keeps one phase accumulator
per frequency, so frames of any length join without a click: generating 960
samples at once or as two halves gives the same signal. Call-progress tones
(dial tone 350+440 Hz, ringback 440+480 Hz) and DTMF digits are sums of two
such sines; cadences (on/off timing) are the caller's business.

Example::

    dial_tone = ToneGenerator((350.0, 440.0), amplitude=0.25)
    frame = dial_tone.next_frame(FRAME_SAMPLES)
"""

from __future__ import annotations

import math

import numpy as np

from appliance.media.frames import SAMPLE_RATE, Samples

__all__ = ["DTMF_FREQUENCIES", "ToneGenerator"]

#: ITU-T Q.23 keypad frequencies in Hz: (low group, high group) for each key.
#: Rows are 697/770/852/941 Hz, columns 1209/1336/1477 Hz (the fourth column,
#: 1633 Hz for A-D, is not on a desk-phone keypad).
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "*": (941, 1209),
    "0": (941, 1336),
    "#": (941, 1477),
}

_INT16_MAX = 32767
_INT16_MIN = -32768


class ToneGenerator:
    """Generate a sum of sines frame by frame, with continuous phase.

    Args:
        freqs: frequencies in Hz; each must be above 0 and below the Nyquist
            frequency. An empty tuple gives silence.
        amplitude: peak amplitude of *each* sine as a fraction of full scale
            (0.0..1.0). Two sines at 0.25 each (-12 dBFS per tone, the usual
            way call-progress tones are specified) peak at 0.5. The sum is
            clipped to the int16 range.
        sample_rate: samples per second of the output.

    Raises:
        ValueError: a frequency or the amplitude is out of range.
    """

    def __init__(
        self,
        freqs: tuple[float, ...],
        amplitude: float,
        *,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        nyquist = sample_rate / 2
        for freq in freqs:
            if not 0.0 < freq < nyquist:
                raise ValueError(
                    f"tone frequency {freq} Hz is outside 0..{nyquist:g} Hz"
                )
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError(f"amplitude must be within 0.0..1.0, got {amplitude}")
        self.freqs = tuple(float(f) for f in freqs)
        self.amplitude = float(amplitude)
        self.sample_rate = sample_rate
        # Phase of each sine at the next sample, in radians, kept in [0, 2*pi)
        # so that precision does not degrade over a long call.
        self._phases = np.zeros(len(self.freqs), dtype=np.float64)
        self._steps = np.array(
            [2.0 * math.pi * f / sample_rate for f in self.freqs], dtype=np.float64
        )

    def next_frame(self, n: int) -> Samples:
        """Return the next ``n`` samples (int16) and advance the phases.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"frame length must not be negative, got {n}")
        if not self.freqs:
            return np.zeros(n, dtype=np.int16)
        index = np.arange(n, dtype=np.float64)
        # One row per frequency: phase0 + k * step.
        phases = self._phases[:, np.newaxis] + self._steps[:, np.newaxis] * index
        mixed = np.sin(phases).sum(axis=0) * (self.amplitude * _INT16_MAX)
        self._phases = np.mod(self._phases + self._steps * n, 2.0 * math.pi)
        samples: Samples = np.clip(np.rint(mixed), _INT16_MIN, _INT16_MAX).astype(
            np.int16
        )
        return samples
