"""Rate conversion for sound cards that do not run at the phone's 48 kHz.

Many USB headsets and codecs only offer 44.1, 16 or 8 kHz. The phone's media
path runs at 48 kHz mono throughout, so the ALSA streams convert at the
device edge. The conversion is streaming (libswresample keeps its filter
state between calls, so frame edges leave no clicks) and lives in PyAV,
which aiortc already loads; it is imported only when a device needs it.
"""

from __future__ import annotations

import numpy as np

from appliance.media.frames import Samples

__all__ = ["Resampler"]


class Resampler:
    """Streaming mono int16 rate conversion with PyAV (libswresample)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import av  # lazy: only devices that need it pay for the import

        self._av = av
        self.in_rate = in_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def convert(self, samples: Samples) -> Samples:
        if samples.size == 0:
            return samples
        frame = self._av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.in_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(out).astype(np.int16, copy=False)
