"""Test material and its analysis: WAV files, speech, markers, alignment, PESQ.

The tests, the audio benchmarks and ``appliance demo`` play material into the
rig's microphones and judge what comes out of its speakers. Making and judging
that material is a job of its own, kept apart from :mod:`appliance_dev.rig`
(which runs processes and owns no numbers): much of it needs no sound card at
all. The media tests send synthesized speech through real aiortc and score it
with PESQ; a benchmark re-analyses a recording it made earlier. Everything here
works on WAV files and numpy arrays at the rig's rate (48 kHz mono s16 unless
a function says otherwise).

Latency on the tap rig (``shared/reference/test-rig.md`` §8): a
:func:`chirp` marker survives Opus and PCMU and still correlates sharply;
:func:`locate_onsets` finds each marker on the mic-feed channel of a tap
recording, and :func:`find_delays` finds it again on a speaker channel of the
*same* recording, so when the feeder or the recorder started does not enter.
Speech quality: :func:`align` finds the reference in the recording,
:func:`windowed_correlation` scores it so that one lost frame costs one window,
and :func:`pesq_wb` gives the P.862.2 MOS when the optional ``pesq`` package is
installed.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from appliance_dev.rig import RATE, RigUnavailableError

__all__ = [
    "Alignment",
    "align",
    "chirp",
    "find_delays",
    "locate_onsets",
    "normalized_correlation",
    "pesq_wb",
    "read_wav",
    "resample",
    "speech",
    "windowed_correlation",
    "write_wav",
]

Floats = npt.NDArray[np.float64]


def read_wav(path: str | Path) -> tuple[npt.NDArray[np.int16], int, int]:
    """Return (interleaved int16 samples, rate, channels) of a 16-bit WAV."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16-bit PCM")
        raw = reader.readframes(reader.getnframes())
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        return samples, reader.getframerate(), reader.getnchannels()


def write_wav(
    path: str | Path, samples: npt.ArrayLike, rate: int = RATE, channels: int = 1
) -> None:
    """Write interleaved int16 ``samples`` as a 16-bit PCM WAV."""
    data = np.asarray(samples)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(data.astype("<i2").tobytes())


def resample(samples: npt.ArrayLike, from_rate: int, to_rate: int) -> Floats:
    """Band-limited mono rate conversion (PyAV's libswresample), as float64."""
    data = np.asarray(samples)
    if from_rate == to_rate or data.size == 0:
        return data.astype(np.float64)
    import av  # lazy: only analysis needs it here

    pcm = np.clip(np.rint(data), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    converter = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    parts = [f.to_ndarray().reshape(-1) for f in converter.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in converter.resample(None)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def speech(
    text: str,
    path: str | Path,
    *,
    voice: str = "en-us",
    lead_s: float = 0.0,
    tail_s: float = 0.0,
) -> npt.NDArray[np.int16]:
    """Synthesize ``text`` with espeak-ng into a 48 kHz mono WAV at ``path``.

    ``lead_s``/``tail_s`` of digital silence frame the speech. Returns the
    samples written.

    Raises:
        RigUnavailableError: espeak-ng is not installed or failed.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RigUnavailableError(
            "espeak-ng is not installed (apt-get install espeak-ng)"
        )
    raw = Path(path).with_suffix(".espeak.wav")
    try:
        subprocess.run(
            [espeak, "-v", voice, "-s", "160", "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        samples, rate, _channels = read_wav(raw)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RigUnavailableError(f"espeak-ng failed: {exc}") from exc
    finally:
        raw.unlink(missing_ok=True)
    voice_48k = resample(samples, rate, RATE)
    # espeak-ng peaks near full scale; -6 dB leaves the codec headroom.
    peak = float(np.max(np.abs(voice_48k))) or 1.0
    voice_48k *= 16000.0 / peak
    out = np.concatenate(
        [
            np.zeros(int(lead_s * RATE)),
            voice_48k,
            np.zeros(int(tail_s * RATE)),
        ]
    )
    pcm: npt.NDArray[np.int16] = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    write_wav(path, pcm)
    return pcm


def chirp(
    duration_s: float = 0.05,
    f0: float = 300.0,
    f1: float = 3400.0,
    amplitude: float = 0.5,
    rate: int = RATE,
) -> Floats:
    """A Hann-windowed linear chirp (int16 scale): a sharp, codec-proof marker.

    An impulse ("click") is smeared by Opus and band-limited by PCMU; a chirp
    in the telephone band survives both and still has a narrow
    autocorrelation peak (about 1/(f1 - f0) wide).
    """
    t = np.arange(int(duration_s * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration_s))
    return amplitude * 32767 * np.hanning(t.size) * np.sin(phase)


class Alignment(NamedTuple):
    """Where a reference occurs in a recording.

    Attributes:
        lag: ``recording[lag + n]`` corresponds to ``reference[n]`` (samples).
        correlation: normalized correlation of the two at that lag (-1..1).
    """

    lag: int
    correlation: float


def normalized_correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two equally long signals (0 when either is silent)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    denom = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / denom if denom > 0 else 0.0


def _segment(recording: Floats, start: int, length: int) -> Floats:
    """``recording[start:start+length]``, zero-padded outside the recording."""
    out = np.zeros(length)
    lo, hi = max(start, 0), min(start + length, recording.size)
    if hi > lo:
        out[lo - start : hi - start] = recording[lo:hi]
    return out


def align(
    reference: npt.ArrayLike,
    recording: npt.ArrayLike,
    *,
    min_lag: int = 0,
    max_lag: int | None = None,
) -> Alignment:
    """Find ``reference`` in ``recording`` by FFT cross-correlation.

    Args:
        reference: what was sent (mono).
        recording: what was received (mono).
        min_lag: smallest lag considered, samples (negative allowed).
        max_lag: largest lag considered (default: the recording's length).
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    n = 1 << int(np.ceil(np.log2(ref.size + rec.size)))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    hi = rec.size if max_lag is None else max_lag
    lags = np.arange(min_lag, hi + 1)
    lag = int(lags[int(np.argmax(corr[lags % n]))])
    return Alignment(lag, normalized_correlation(ref, _segment(rec, lag, ref.size)))


def windowed_correlation(
    reference: npt.ArrayLike,
    recording: npt.ArrayLike,
    lag: int,
    *,
    window_s: float = 0.5,
    search_s: float = 0.06,
    rate: int = RATE,
) -> float:
    """Median normalized correlation of the active windows of ``reference``.

    Each window is re-aligned within ``search_s`` of ``lag``, so that one lost
    or inserted frame (an xrun, a dropped packet) costs one window instead of
    shifting everything after it. Windows below a tenth of the reference's RMS
    (pauses) are skipped.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    size = int(window_s * rate)
    search = int(search_s * rate)
    floor = 0.1 * float(np.sqrt(np.mean(ref**2))) if ref.size else 0.0
    scores = []
    for start in range(0, ref.size - size + 1, size):
        window = ref[start : start + size]
        if float(np.sqrt(np.mean(window**2))) < floor:
            continue
        base = lag + start - search
        local = align(
            window, _segment(rec, base, size + 2 * search), max_lag=2 * search
        )
        scores.append(local.correlation)
    return float(np.median(scores)) if scores else 0.0


def pesq_wb(
    reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int = RATE
) -> float | None:
    """PESQ-WB (ITU-T P.862.2) MOS-LQO of two aligned signals, or None.

    None when the optional ``pesq`` package is missing. Both signals are
    converted to 16 kHz, the rate P.862.2 is defined for.
    """
    try:
        # Imported by name: an optional dev dependency without type stubs.
        pesq_module = importlib.import_module("pesq")
    except ImportError:
        return None
    ref16 = resample(reference, rate, 16_000)
    deg16 = resample(degraded, rate, 16_000)
    n = min(ref16.size, deg16.size)
    return float(pesq_module.pesq(16_000, ref16[:n], deg16[:n], "wb"))


def locate_onsets(
    channel: npt.ArrayLike,
    *,
    threshold: float = 1000.0,
    min_gap_s: float = 0.3,
    rate: int = RATE,
) -> list[int]:
    """Sample indices where ``channel`` rises above ``threshold`` after a quiet gap."""
    data = np.abs(np.asarray(channel, dtype=np.float64))
    loud = np.flatnonzero(data > threshold)
    if loud.size == 0:
        return []
    starts = np.concatenate([loud[:1], loud[1:][np.diff(loud) > min_gap_s * rate]])
    return [int(i) for i in starts]


def find_delays(
    feed: npt.ArrayLike,
    speaker: npt.ArrayLike,
    onsets: Sequence[int],
    *,
    length: int,
    first_window: tuple[int, int] = (0, RATE * 3 // 2),
    track_s: float = 0.3,
    min_score: float = 0.5,
    rate: int = RATE,
) -> list[tuple[int, int | None, float]]:
    """Delay of each marker from the mic-feed channel to a speaker channel.

    test-rig.md §8: every marker is located on the feed channel itself
    (``onsets``), then found on the speaker channel of the *same* recording
    by normalized cross-correlation: first within ``first_window`` samples
    after the onset, then within ±``track_s`` of the previous delay.

    Returns:
        (onset, delay in samples or None when the best score is below
        ``min_score``, score) per onset.
    """
    src = np.asarray(feed, dtype=np.float64)
    out = np.asarray(speaker, dtype=np.float64)
    track = int(track_s * rate)
    results: list[tuple[int, int | None, float]] = []
    previous: int | None = None
    for onset in onsets:
        template = src[onset : onset + length]
        lo, hi = (
            first_window
            if previous is None
            else (max(0, previous - track), previous + track)
        )
        span = _segment(out, onset + lo, hi - lo + length)
        corr = np.correlate(span, template, mode="valid")
        # Normalize by the energy under the template at each position.
        energy = np.convolve(span**2, np.ones(length), mode="valid")
        norm = np.sqrt(np.maximum(energy, 1e-9) * float(np.dot(template, template)))
        score = corr / norm
        best = int(np.argmax(score))
        value = float(score[best])
        delay = lo + best if value >= min_score else None
        if delay is not None:
            previous = delay
        results.append((onset, delay, value))
    return results
