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

What is played into the rig and how its recordings are judged (WAV files,
speech, chirps, alignment, PESQ) is :mod:`appliance_dev.analysis`.

Example::

    with VirtualCards(["A", "B"]) as rig:
        rig.install()
        src = AlsaSource(rig.mic_pcm("A"))
        rig.feed("A", "tone.wav").wait()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "RigProcess",
    "RigUnavailableError",
    "VirtualCards",
    "timeout_factor",
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
