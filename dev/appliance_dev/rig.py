"""Clocked virtual sound cards: a private PulseAudio daemon per rig.

Used by the tests, the audio benchmarks and ``appliance demo`` (which is why it
lives in the package: production code never imports ``tests``). Nothing on a
real phone uses it; it needs PulseAudio and the ALSA pulse plugin, which the
phone image does not ship.

Recipe and pitfalls: ``shared/reference/test-rig.md`` §2 and §8. Each phone
``NAME`` gets

* ``micfeedNAME``: a mono null sink; whatever a test plays into it (:meth:`feed`)
  comes out of the phone's microphone;
* ``micNAME``: a remap source over ``micfeedNAME.monitor`` (the microphone);
* ``spkNAME``: a mono null sink (the speaker); :meth:`record` taps its monitor;
* ALSA PCMs ``NAME_mic`` and ``NAME_spk`` (``type pulse`` with the daemon's socket
  path), written to :attr:`VirtualCards.asoundrc`.

The ALSA ``null``/``file`` plugins and ``module-pipe-source`` are not clocked
(test-rig.md §2 table), so they are never used here. Null sinks are clocked by
the daemon's timer, 48 kHz mono s16 end to end.

Two start-up pitfalls are handled: without a low-latency client a null sink
runs in 2 s blocks and a new ALSA stream stalls for up to 1.7 s (gotcha 1), so
20 ms "keeper" streams are attached to every sink and we wait 2.5 s after them
(§8 gotcha 2). Streams connecting later can still cause one underrun in a
running ALSA client (§8 gotcha 1): start feeders and recorders before the
device under test when timing matters.

With ``tap=True`` every device is one channel of a single 4·N-channel null sink
``probe`` (§8), so :meth:`record_tap` captures all mic feeds and speakers on one
sample clock, for latency measurements.

alsa-lib reads its configuration when a PCM is first opened and re-reads it
only when the files named in ``ALSA_CONFIG_PATH`` change. :meth:`install`
points ``ALSA_CONFIG_PATH`` of *this* process at the system ``alsa.conf`` plus
the rig's asoundrc (restored by :meth:`stop`), which makes the PCMs visible to
pyalsaaudio in-process; :attr:`env` is the environment for child processes.

Example::

    with VirtualCards(["A", "B"]) as rig:
        rig.install()
        src = AlsaSource(rig.mic_pcm("A"))
        rig.feed("A", "tone.wav").wait()
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "Alignment",
    "RigProcess",
    "RigUnavailableError",
    "VirtualCards",
    "align",
    "chirp",
    "find_delays",
    "locate_onsets",
    "normalized_correlation",
    "pesq_wb",
    "read_wav",
    "resample",
    "speech",
    "timeout_factor",
    "windowed_correlation",
    "write_wav",
]

RATE = 48_000
KEEPER_LATENCY_MS = 20
#: test-rig.md §8 gotcha 2: streams opened within ~2 s of the keepers lose audio.
SETTLE_S = 2.5
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
#: A sound card's sample clock is hardware: it keeps time however busy the CPU
#: is. The rig's clock is PulseAudio's timer and its feeders and recorders are
#: processes, so they run above everything under test (the phone runs at the
#: unit's ``Nice=-5``; CPU burners at 0): a starved feeder inserts silence into
#: the microphone and a starved recorder drops speaker audio (test-rig.md §8
#: gotcha 4), which a test would blame on the phone.
RIG_NICE = -15
#: PulseAudio's own real-time request for its I/O threads (daemon.conf
#: ``realtime-priority``); it succeeds as root, elsewhere the nice level holds.
RIG_RT_PRIORITY = 20
REQUIRED_TOOLS = ("pulseaudio", "pactl", "pacat", "parecord", "paplay")
APT_HINT = (
    "install the rig with: apt-get install -y --no-install-recommends "
    "pulseaudio pulseaudio-utils libasound2-plugins alsa-utils "
    "(`make setup` does it as root)"
)


def timeout_factor() -> float:
    """Return APPLIANCE_TEST_TIMEOUT_FACTOR (default 1) for scaling waits."""
    return float(os.environ.get("APPLIANCE_TEST_TIMEOUT_FACTOR", "1"))


class RigUnavailableError(RuntimeError):
    """The virtual sound cards cannot be started (missing package, daemon died)."""


class RigProcess:
    """A feeder or recorder process started by the rig; stop it with :meth:`stop`."""

    def __init__(self, proc: subprocess.Popen[bytes], path: Path) -> None:
        self.proc = proc
        self.path = path

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the process ends (a feeder ends after its file)."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """End the process; recorders finish their WAV header on SIGINT."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2.0)


class VirtualCards:
    """A private PulseAudio daemon with per-phone virtual microphones and speakers.

    Args:
        phones: phone names; each gets ``NAME_mic`` and ``NAME_spk`` ALSA PCMs.
        tap: build all devices as channels of one null sink (test-rig.md §8).
        root: scratch directory (default: a new temporary directory, removed on
            :meth:`stop`). Keep it short: the socket path must fit 108 bytes.

    Raises:
        RigUnavailableError: from :meth:`start` when PulseAudio or the ALSA pulse
            plugin is not installed, or the daemon does not come up. Tests that
            need the rig must fail on it, not skip: they are the point.
    """

    def __init__(
        self,
        phones: Sequence[str] = ("A", "B"),
        *,
        tap: bool = False,
        root: Path | None = None,
    ) -> None:
        for name in phones:
            if not name.isalnum():
                raise ValueError(f"phone name must be alphanumeric: {name!r}")
        self.phones = list(phones)
        self.tap = tap
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="rig-")) if root is None else root
        self.run_dir = self.root / "run"
        self.home = self.root / "home"
        self.socket = self.run_dir / "native"
        self.asoundrc = self.root / "asoundrc"
        self.log_path = self.run_dir / "pa.log"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._saved_alsa_path: str | None = None
        self._installed = False
        self.env: dict[str, str] = {}

    # ---- names -----------------------------------------------------------

    @staticmethod
    def mic_pcm(name: str) -> str:
        """Return the ALSA PCM name of phone ``name``'s microphone."""
        return f"{name}_mic"

    @staticmethod
    def spk_pcm(name: str) -> str:
        """Return the ALSA PCM name of phone ``name``'s speaker."""
        return f"{name}_spk"

    @property
    def server(self) -> str:
        """The PulseAudio server string of this rig."""
        return f"unix:{self.socket}"

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self) -> VirtualCards:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> VirtualCards:
        """Start the daemon and keepers, write the asoundrc; returns self."""
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise RigUnavailableError(f"missing {', '.join(missing)}; {APT_HINT}")
        if not any(Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_pulse.so")):
            raise RigUnavailableError(f"ALSA pulse plugin not found; {APT_HINT}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        (self.home / ".config").mkdir(parents=True, exist_ok=True)
        (self.root / "rig.pa").write_text(self._script())
        (self.root / "daemon.conf").write_text(
            "exit-idle-time = -1\n"
            "default-sample-format = s16le\n"
            f"default-sample-rate = {RATE}\n"
            "default-sample-channels = 1\n"
            "high-priority = yes\n"
            f"nice-level = {RIG_NICE}\n"
            "realtime-scheduling = yes\n"
            f"realtime-priority = {RIG_RT_PRIORITY}\n"
        )
        self.asoundrc.write_text(self._asoundrc())
        # (self.home/.asoundrc) serves processes that only get HOME.
        shutil.copyfile(self.asoundrc, self.home / ".asoundrc")
        alsa_path = os.pathsep.join([SYSTEM_ALSA_CONF, str(self.asoundrc)])
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "PULSE_SERVER": self.server,
            "ALSA_CONFIG_PATH": alsa_path,
        }
        daemon_env = {**self.env, "PULSE_CONFIG": str(self.root / "daemon.conf")}
        try:
            # pulseaudio as root warns "not intended to be run as root": harmless
            # (test-rig.md §2 gotcha 3); private HOME/XDG dirs keep it contained.
            self._daemon = subprocess.Popen(
                [
                    "pulseaudio",
                    "-n",
                    "-F",
                    str(self.root / "rig.pa"),
                    "--daemonize=no",
                    "--use-pid-file=no",
                    "--exit-idle-time=-1",
                    f"--log-target=file:{self.log_path}",
                    "--log-level=warn",
                ],
                env=daemon_env,
                preexec_fn=_rig_priority,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_ready()
            self._start_keepers()
        except BaseException:
            self.stop()
            raise
        time.sleep(SETTLE_S)
        return self

    def _wait_ready(self) -> None:
        assert self._daemon is not None
        deadline = time.monotonic() + 10.0 * timeout_factor()
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                raise RigUnavailableError(
                    f"pulseaudio exited with {self._daemon.returncode}: {self._log()}"
                )
            probe = subprocess.run(
                ["pactl", "info"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise RigUnavailableError(f"pulseaudio did not come up: {self._log()}")

    def _log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def _start_keepers(self) -> None:
        spec = [f"--rate={RATE}", "--channels=1", "--format=s16le", "--raw"]
        lat = f"--latency-msec={KEEPER_LATENCY_MS}"
        for name in self.phones:
            # pacat reading /dev/zero mixes zeros (exact) into the mic feed.
            self._spawn(
                ["pacat", "--playback", lat, f"--device=micfeed{name}", *spec],
                stdin_path="/dev/zero",
            )
            self._spawn(
                ["parecord", lat, f"--device=spk{name}.monitor", *spec, "/dev/null"]
            )

    def _spawn(
        self, argv: list[str], stdin_path: str | None = None
    ) -> subprocess.Popen[bytes]:
        with contextlib.ExitStack() as stack:
            stdin = (
                stack.enter_context(open(stdin_path, "rb"))
                if stdin_path
                else subprocess.DEVNULL
            )
            proc = subprocess.Popen(
                argv,
                env=self.env,
                preexec_fn=_rig_priority,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._procs.append(proc)
        return proc

    def install(self) -> None:
        """Make the rig's PCMs visible to ALSA in this process (until :meth:`stop`).

        alsa-lib re-reads ``ALSA_CONFIG_PATH`` on every PCM open and reloads when
        the file list changed, so this works even after earlier PCM opens.
        """
        if not self._installed:
            self._saved_alsa_path = os.environ.get("ALSA_CONFIG_PATH")
            os.environ["ALSA_CONFIG_PATH"] = self.env["ALSA_CONFIG_PATH"]
            self._installed = True

    def stop(self) -> None:
        """Stop every process this rig started (by PID) and remove its files."""
        if self._installed:
            if self._saved_alsa_path is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = self._saved_alsa_path
            self._installed = False
        for proc in reversed(self._procs):
            _terminate(proc)
        self._procs.clear()
        if self._daemon is not None:
            _terminate(self._daemon)
            self._daemon = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def kill_daemon(self) -> None:
        """Kill the daemon abruptly: every virtual card vanishes at once (unplug)."""
        if self._daemon is not None:
            self._daemon.kill()
            self._daemon.wait(3.0)

    # ---- feeding and recording ------------------------------------------

    def feed(self, name: str, wav_path: str | Path) -> RigProcess:
        """Play a WAV file into phone ``name``'s microphone (real time)."""
        proc = self._spawn(
            [
                "paplay",
                f"--latency-msec={KEEPER_LATENCY_MS}",
                f"--device=micfeed{name}",
                str(wav_path),
            ]
        )
        return RigProcess(proc, Path(wav_path))

    def record(self, name: str, wav_path: str | Path) -> RigProcess:
        """Record phone ``name``'s speaker into a 48 kHz mono WAV until stopped."""
        return self._record(f"spk{name}.monitor", 1, [], wav_path)

    def record_tap(self, wav_path: str | Path) -> RigProcess:
        """Record every channel of the tap rig into one multichannel WAV.

        Channel ``2*i`` is phone ``i``'s microphone feed and ``2*i+1`` its speaker
        (phones in constructor order), all on one sample clock (test-rig.md §8).
        """
        if not self.tap:
            raise RuntimeError("record_tap needs VirtualCards(tap=True)")
        n = 2 * len(self.phones)
        cmap = ",".join(f"aux{i}" for i in range(n))
        return self._record("probe.monitor", n, [f"--channel-map={cmap}"], wav_path)

    def _record(
        self, device: str, channels: int, extra: list[str], wav_path: str | Path
    ) -> RigProcess:
        proc = self._spawn(
            [
                "parecord",
                f"--latency-msec={KEEPER_LATENCY_MS}",
                f"--device={device}",
                "--file-format=wav",
                f"--rate={RATE}",
                f"--channels={channels}",
                "--format=s16le",
                *extra,
                str(wav_path),
            ]
        )
        return RigProcess(proc, Path(wav_path))

    def pactl(self, *args: str) -> str:
        """Run ``pactl`` against this rig's daemon and return its output."""
        done = subprocess.run(
            ["pactl", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    # ---- configuration text ---------------------------------------------

    def _script(self) -> str:
        lines = [
            f"load-module module-native-protocol-unix socket={self.socket} "
            "auth-anonymous=1",
        ]
        fmt = f"rate={RATE} format=s16le"
        if self.tap:
            n = 2 * len(self.phones)
            cmap = ",".join(f"aux{i}" for i in range(n))
            lines.append(
                f"load-module module-null-sink sink_name=probe {fmt} "
                f"channels={n} channel_map={cmap}"
            )
            for i, name in enumerate(self.phones):
                feed_ch, spk_ch = f"aux{2 * i}", f"aux{2 * i + 1}"
                for sink, ch in ((f"micfeed{name}", feed_ch), (f"spk{name}", spk_ch)):
                    lines.append(
                        f"load-module module-remap-sink sink_name={sink} "
                        "master=probe channels=1 channel_map=mono "
                        f"master_channel_map={ch} remix=no"
                    )
                lines.append(
                    f"load-module module-remap-source source_name=mic{name} "
                    "master=probe.monitor channels=1 channel_map=mono "
                    f"master_channel_map={feed_ch} remix=no"
                )
        else:
            for name in self.phones:
                for sink in (f"spk{name}", f"micfeed{name}"):
                    lines.append(
                        f"load-module module-null-sink sink_name={sink} {fmt} "
                        "channels=1"
                    )
                lines.append(
                    f"load-module module-remap-source source_name=mic{name} "
                    f"master=micfeed{name}.monitor channels=1"
                )
        lines += [
            f"set-default-sink spk{self.phones[0]}",
            f"set-default-source mic{self.phones[0]}",
        ]
        return "\n".join(lines) + "\n"

    def _asoundrc(self) -> str:
        out = []
        for name in self.phones:
            for pcm, dev, what, ioid in (
                (self.mic_pcm(name), f"mic{name}", "microphone", "Input"),
                (self.spk_pcm(name), f"spk{name}", "speaker", "Output"),
            ):
                # The hint lists the PCM in ALSA's device hints (aplay -L,
                # alsaaudio.pcms()); alsa-lib appends the description verbatim
                # to "NAME..|DESC", so "|IOIDInput" limits it to one direction.
                out.append(
                    f"pcm.{pcm} {{\n"
                    "  type pulse\n"
                    f'  server "{self.server}"\n'
                    f'  device "{dev}"\n'
                    "  hint { show on description "
                    f'"Rig phone {name} {what}|IOID{ioid}" }}\n'
                    "}\n"
                )
        return "".join(out)

    def pids(self) -> Iterable[int]:
        """PIDs of every process this rig started (daemon first)."""
        if self._daemon is not None:
            yield self._daemon.pid
        for proc in self._procs:
            yield proc.pid


def _rig_priority() -> None:
    """Run in the child before exec: the rig's processes keep the card's time.

    Lowering a nice value needs CAP_SYS_NICE or RLIMIT_NICE; without either the
    rig still works, only less steadily on a busy machine.
    """
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, RIG_NICE)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(3.0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(3.0)


# ---------------------------------------------------------------------------
# Test material and analysis (numpy; used by tests, benchmarks and the demo)

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
