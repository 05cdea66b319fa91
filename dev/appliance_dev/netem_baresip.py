"""A baresip call across an :class:`~appliance_dev.netem.ImpairedLink` (the anchor).

Debian's baresip (``baresip-core``), as configured by its example config where
it matters to the media (jitter buffer 5-10 frames, Opus at 28 kb/s, no RTCP
mux), one process per namespace, SIP over UDP straight between the two link
addresses (no registrar, ``regint=0``), plain RTP (no ICE, no SRTP). No sound
card is involved, and both run at the phone unit's nice value:

* ``aufile`` plays the WAV as the caller's microphone; at its end the caller
  hangs up;
* ``aubridge`` is the speaker on both sides: a device that pulls decoded audio
  on its own 20 ms clock, as a sound card would;
* ``sndfile`` dumps what the callee decodes (``dump-*-dec.wav``), the
  recording that is scored.

With :func:`baresip_cards` each side uses a sound card instead (baresip's ``alsa``
module, e.g. on the virtual cards of :mod:`appliance_dev.rig`), both ways.

Needs the ``baresip`` program (``apt-get install baresip-core``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from appliance_dev.netem import ImpairedLink
from appliance_dev.unit_file import unit_nice

__all__ = ["baresip_across", "baresip_cards", "baresip_missing"]

MODULES = "/usr/lib/baresip/modules"


def baresip_missing() -> str | None:
    """Why baresip cannot run here, or None."""
    if shutil.which("baresip") is None or not Path(MODULES).is_dir():
        return "needs Debian's baresip (apt-get install baresip-core)"
    return None


def _config(
    where: Path,
    link: ImpairedLink,
    side: str,
    source: Path,
    card: tuple[str, str] | None = None,
) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if card is None:
        modules = ["opus", "g711", "aufile", "aubridge"] + (
            ["sndfile"] if side == "b" else []
        )
        devices = [
            "audio_player aubridge,speaker",
            f"audio_source aufile,{source}",
            "audio_alert aubridge,speaker",
        ]
    else:
        modules = ["opus", "g711", "alsa"]
        devices = [
            f"audio_player alsa,{card[1]}",
            f"audio_source alsa,{card[0]}",
            f"audio_alert alsa,{card[1]}",
        ]
    lines = [
        f"module_path {MODULES}",
        f"sip_listen {link.address(side)}:5060",
        f"net_interface {link.interface(side)}",
        *devices,
        *(f"{key} 48000" for key in ("ausrc_srate", "auplay_srate")),
        *(f"{key} 1" for key in ("ausrc_channels", "auplay_channels")),
        "jitter_buffer_delay 5-10",
        "rtcp_mux no",
        "opus_bitrate 28000",
        f"snd_path {where}",
        *(f"module {name}.so" for name in modules),
        "module_tmp account.so",
        "module_app menu.so",
    ]
    (where / "config").write_text("\n".join(lines) + "\n")
    answer = ";answermode=auto" if side == "b" else ""
    (where / "accounts").write_text(
        f"<sip:{side}@{link.address(side)}>;regint=0{answer}\n"
    )


def baresip_across(
    link: ImpairedLink, source: Path, silence: Path, work: Path, seconds: float
) -> Path:
    """Call from ``a`` (playing ``source``) to ``b`` (playing ``silence``, which
    must outlast the call); returns the callee's decoded-audio recording.

    Raises:
        RuntimeError: the callee never became ready or recorded nothing.
    """
    dirs = {side: work / f"baresip-{side}" for side in "ab"}
    _config(dirs["a"], link, "a", source)
    _config(dirs["b"], link, "b", silence)
    _call(link, dirs, seconds, None)
    found = sorted(dirs["b"].glob("dump-*-dec.wav"))
    if not found:
        raise RuntimeError(f"baresip recorded nothing; see {dirs['b'] / 'log'}")
    return found[-1]


def baresip_cards(
    link: ImpairedLink,
    cards: dict[str, tuple[str, str]],
    work: Path,
    seconds: float,
    env: dict[str, str] | None = None,
) -> None:
    """Call from ``a`` to ``b`` both ways on sound cards, ``(mic PCM, speaker
    PCM)`` per side, for about ``seconds``; ``env`` is the sides' environment
    (the cards' recording is the caller's).

    Raises:
        RuntimeError: the callee never became ready.
    """
    dirs = {side: work / f"baresip-{side}" for side in "ab"}
    for side in "ab":
        _config(dirs[side], link, side, Path(), cards[side])
    _call(link, dirs, seconds, env)


def _call(
    link: ImpairedLink,
    dirs: dict[str, Path],
    seconds: float,
    env: dict[str, str] | None,
) -> None:
    quit_after = str(int(seconds + 10))
    # At the phone unit's priority, as the other stacks of the bench.
    nice = ["nice", "-n", str(unit_nice())]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (dirs["b"] / "log").open("wb") as log_b:
            procs.append(
                subprocess.Popen(
                    link.command(
                        "b", [*nice, "baresip", "-f", str(dirs["b"]), "-t", quit_after]
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=log_b,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        _wait_for(dirs["b"] / "log", b"baresip is ready", procs[0], 20.0)
        dial = f"/dial sip:b@{link.address('b')}"
        argv = [*nice, "baresip", "-f", str(dirs["a"]), "-t", quit_after, "-e", dial]
        with (dirs["a"] / "log").open("wb") as log_a:
            procs.append(
                subprocess.Popen(
                    link.command("a", argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log_a,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        for proc in procs:
            proc.wait(seconds + 60)
    finally:
        for proc in procs:  # only ours, by PID
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _wait_for(
    log: Path, text: bytes, proc: subprocess.Popen[bytes], limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while text not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"baresip did not start; see {log}")
        time.sleep(0.05)
