"""In-band DTMF detection with the ITU-T Q.24 acceptance limits (pure, numpy).

Theory of operation. The signal is cut into 20 ms analysis frames every 10 ms.
For each frame:

1. Hann-windowed single-bin DFTs (Goertzel's filter, computed as a dot
   product) at the eight Q.23 frequencies pick the strongest row and column
   tone.
2. The actual frequency of each of the two tones is measured from the phase
   advance of the same DFT over two 15 ms windows 5 ms apart (the "phase
   vocoder" estimate): a tone at ``f`` advances by ``2*pi*f*D/fs``, unambiguous
   within ±100 Hz of the nominal frequency, accurate to well under 1 Hz at the
   levels that matter.
3. A least-squares fit of the two measured sinusoids to the unwindowed frame
   gives each tone's amplitude and the energy of everything else.

A frame is *valid* for a digit when (anchors.md §3.2, ITU-T Q.24):

* both tones deviate at most ``max_deviation`` (1.75 %) from nominal. Q.24
  demands acceptance within ±1.5 % and rejection beyond ±3.5 %; 1.75 % also
  rejects Twilio's off-standard "fake local DTMF" feedback pairs
  (signaling-protocol.md §7), whose row tone is 2.0-3.3 % off (and a 2.5 %
  threshold would let 9 = 1480+870 Hz and # = 1480+960 Hz through);
* twist is at most 8 dB normal (row tone louder) and 4 dB reverse;
* the two tones are at least 15 dB above all other energy in the frame;
* each tone is above ``min_level_dbfs``.

Durations: a digit is accepted after 2 consecutive valid frames. A frame is
valid only when the tone covers (nearly) all of its 20 ms, so any tone of
40 ms or more yields at least 2, and any tone shorter than 29 ms at most 1:
Q.24's "accept ≥ 40 ms, reject < 23 ms" holds with margin. A digit ends after
4 consecutive frames without it (a pause of about 30 ms or more), so a 10 ms
interruption does not produce a second digit.

Time comes only from the sample count: event times are ``start_time`` plus
the position in the stream, in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "COLUMN_HZ",
    "DIGITS",
    "ROW_HZ",
    "DtmfDetector",
    "DtmfEvent",
    "detect_digits",
]

#: ITU-T Q.23 low (row) group, Hz.
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
#: ITU-T Q.23 high (column) group, Hz.
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad layout: DIGITS[row][column].
DIGITS = ("123A", "456B", "789C", "*0#D")

FRAME_S = 0.020
HOP_S = 0.010
#: Length and offset of the two windows of the frequency estimate.
PHASE_WINDOW_S = 0.015
PHASE_OFFSET_S = 0.005
FRAMES_TO_ACCEPT = 2
FRAMES_TO_RELEASE = 4

_FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DtmfEvent:
    """A detected digit.

    Attributes:
        digit: one of ``0-9 * # A-D``.
        start: time of the first valid frame, seconds (``start_time`` +
            stream position).
        low_hz: measured row frequency.
        high_hz: measured column frequency.
    """

    digit: str
    start: float
    low_hz: float
    high_hz: float


class DtmfDetector:
    """Streaming DTMF detector; feed it blocks of any size.

    Args:
        sample_rate: input rate in Hz (the firmware uses 48000).
        start_time: time of the first sample, seconds.
        max_deviation: largest accepted relative frequency deviation.
        max_normal_twist_db: row tone louder than column tone, at most.
        max_reverse_twist_db: column tone louder than row tone, at most.
        min_snr_db: tones over all other energy, at least.
        min_level_dbfs: each tone's peak amplitude relative to full scale.

    Example::

        detector = DtmfDetector()
        for block in blocks:
            for event in detector.feed(block):
                print(event.digit, event.start)
    """

    def __init__(
        self,
        sample_rate: int = 48_000,
        *,
        start_time: float = 0.0,
        max_deviation: float = 0.0175,
        max_normal_twist_db: float = 8.0,
        max_reverse_twist_db: float = 4.0,
        min_snr_db: float = 15.0,
        min_level_dbfs: float = -36.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.start_time = start_time
        self.max_deviation = max_deviation
        self.max_normal_twist_db = max_normal_twist_db
        self.max_reverse_twist_db = max_reverse_twist_db
        self._min_snr = 10.0 ** (min_snr_db / 10.0)
        self._min_amplitude = 32768.0 * 10.0 ** (min_level_dbfs / 20.0)
        self._frame = round(FRAME_S * sample_rate)
        self._hop = round(HOP_S * sample_rate)
        self._win = round(PHASE_WINDOW_S * sample_rate)
        self._offset = round(PHASE_OFFSET_S * sample_rate)
        freqs = np.array(ROW_HZ + COLUMN_HZ)
        self._freqs = freqs
        n = np.arange(self._win)
        window = np.hanning(self._win)
        # Window times complex exponential: one dot product per bin.
        self._kernels = window[:, None] * np.exp(
            -2j * np.pi * np.outer(n, freqs) / sample_rate
        )
        self._t = np.arange(self._frame) / sample_rate
        self._buffer: _FloatArray = np.zeros(0)
        self._position = 0  # stream index of _buffer[0]
        self._candidate: str | None = None
        self._candidate_count = 0
        self._candidate_start = 0.0
        self._active: str | None = None
        self._miss = 0

    def feed(self, samples: npt.ArrayLike) -> list[DtmfEvent]:
        """Process the next block of samples; return digits accepted in it."""
        block = np.asarray(samples, dtype=np.float64).reshape(-1)
        buf = np.concatenate((self._buffer, block)) if self._buffer.size else block
        events: list[DtmfEvent] = []
        start = 0
        while buf.size - start >= self._frame:
            frame = buf[start : start + self._frame]
            event = self._step(frame, self._position + start)
            if event is not None:
                events.append(event)
            start += self._hop
        self._buffer = buf[start:].copy()
        self._position += start
        return events

    def _step(self, frame: _FloatArray, index: int) -> DtmfEvent | None:
        found = self._analyse(frame)
        if found is None:
            self._candidate = None
            self._candidate_count = 0
            self._miss += 1
            if self._miss >= FRAMES_TO_RELEASE:
                self._active = None
            return None
        digit, low_hz, high_hz = found
        self._miss = 0
        if digit == self._active:
            return None
        if digit == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate = digit
            self._candidate_count = 1
            self._candidate_start = self.start_time + index / self.sample_rate
        if self._candidate_count < FRAMES_TO_ACCEPT:
            return None
        self._active = digit
        self._candidate = None
        self._candidate_count = 0
        return DtmfEvent(digit, self._candidate_start, low_hz, high_hz)

    def _analyse(self, frame: _FloatArray) -> tuple[str, float, float] | None:
        """Return (digit, low Hz, high Hz) if the frame holds a valid pair."""
        energy = float(frame @ frame)
        if energy <= 0.0:
            return None
        first = frame[: self._win] @ self._kernels
        second = frame[self._offset : self._offset + self._win] @ self._kernels
        power = np.abs(first) ** 2 + np.abs(second) ** 2
        row = int(np.argmax(power[:4]))
        col = 4 + int(np.argmax(power[4:]))
        low_hz = self._measure(first[row], second[row], row)
        high_hz = self._measure(first[col], second[col], col)
        for measured, bin_index in ((low_hz, row), (high_hz, col)):
            nominal = self._freqs[bin_index]
            if abs(measured - nominal) > self.max_deviation * nominal:
                return None
        amp_low, amp_high, fitted = self._fit(frame, low_hz, high_hz)
        if min(amp_low, amp_high) < self._min_amplitude:
            return None
        residual = energy - fitted
        if residual > 0.0 and fitted < self._min_snr * residual:
            return None
        twist_db = 20.0 * np.log10(amp_low / amp_high)
        if twist_db > self.max_normal_twist_db or -twist_db > self.max_reverse_twist_db:
            return None
        return DIGITS[row][col - 4], low_hz, high_hz

    def _measure(self, first: complex, second: complex, bin_index: int) -> float:
        """Frequency from the phase advance between the two windows."""
        nominal = float(self._freqs[bin_index])
        advance = np.angle(second * np.conj(first))
        expected = 2.0 * np.pi * nominal * self._offset / self.sample_rate
        error = (advance - expected + np.pi) % (2.0 * np.pi) - np.pi
        return nominal + float(error) * self.sample_rate / (2.0 * np.pi * self._offset)

    def _fit(
        self, frame: _FloatArray, low_hz: float, high_hz: float
    ) -> tuple[float, float, float]:
        """Least-squares fit of both tones: (amplitude low, high, fitted energy)."""
        t = self._t
        basis = np.column_stack(
            (
                np.cos(2 * np.pi * low_hz * t),
                np.sin(2 * np.pi * low_hz * t),
                np.cos(2 * np.pi * high_hz * t),
                np.sin(2 * np.pi * high_hz * t),
            )
        )
        coef, *_ = np.linalg.lstsq(basis, frame, rcond=None)
        model = basis @ coef
        return (
            float(np.hypot(coef[0], coef[1])),
            float(np.hypot(coef[2], coef[3])),
            float(model @ model),
        )


def detect_digits(
    samples: npt.ArrayLike, sample_rate: int = 48_000, **options: float
) -> list[DtmfEvent]:
    """Run a fresh :class:`DtmfDetector` over a whole signal.

    Args:
        samples: mono samples (int16 scale).
        sample_rate: rate in Hz.
        **options: keyword options of :class:`DtmfDetector`.
    """
    detector = DtmfDetector(sample_rate, **options)
    return detector.feed(samples)
