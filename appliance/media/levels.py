"""Audio level measurement: RMS in dBFS and Twilio's 0..1 volume scale.

Pure module (numpy only). ``rms_dbfs`` measures one block of int16 samples
against digital full scale (32768), without the AES17 +3 dB sine correction:
a full-scale sine reads -3.01 dBFS here, full-scale DC reads 0 dBFS.

Twilio.Device reports ``volume`` events with two numbers in 0..1
(``inputVolume``, ``outputVolume``), derived in the browser from a Web Audio
``AnalyserNode``, whose default decibel window (``minDecibels`` -100,
``maxDecibels`` -30) is mapped linearly onto its output range. We reproduce
that window with :func:`level_from_dbfs` so the numbers mean roughly the same
thing on the phone (the analyser averages FFT bins rather than taking an RMS,
so values are comparable, not identical; not re-verified against the SDK).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FULL_SCALE",
    "LEVEL_MAX_DBFS",
    "LEVEL_MIN_DBFS",
    "SILENCE_DBFS",
    "level_from_dbfs",
    "rms_dbfs",
]

#: The magnitude of the most negative int16 sample: 0 dBFS.
FULL_SCALE = 32768.0

#: What :func:`rms_dbfs` returns for digital silence (and the floor of any
#: reading), so callers never see ``-inf`` in events or JSON.
SILENCE_DBFS = -120.0

#: The dB range mapped onto 0.0..1.0, as Twilio's volume events use it.
LEVEL_MIN_DBFS = -100.0
LEVEL_MAX_DBFS = -30.0


def rms_dbfs(samples: npt.NDArray[Any]) -> float:
    """Return the RMS level of ``samples`` in dBFS.

    Args:
        samples: int16-scaled samples (any integer or float dtype, any shape).

    Returns:
        ``20 * log10(rms / 32768)``, never below :data:`SILENCE_DBFS`; an empty
        block counts as silence.
    """
    if samples.size == 0:
        return SILENCE_DBFS
    values = samples.astype(np.float64, copy=False)
    rms = math.sqrt(float(np.mean(np.square(values))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / FULL_SCALE))


def level_from_dbfs(db: float) -> float:
    """Map a level in dBFS linearly from -100..-30 dB onto 0.0..1.0, clamped.

    NaN maps to 0.0 (no meaningful level).
    """
    if math.isnan(db):
        return 0.0
    level = (db - LEVEL_MIN_DBFS) / (LEVEL_MAX_DBFS - LEVEL_MIN_DBFS)
    return min(1.0, max(0.0, level))
