"""``python -m appliance sim`` driven through a pipe, as a user would script it."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from appliance_dev.exchange_process import stop_process
from tests.conftest import scaled, wait_until

#: A user's script. The sim has no command to wait for a DTMF or a mute, so the
#: pauses before hanging up are scaled like the waits, for slow machines.
SCRIPT = f"""\
wait idle {scaled(10)}
+
2#
wait in_call {scaled(10)}
5
*
-
sleep {scaled(0.3)}
hangup
wait idle {scaled(5)}
incoming
wait ringing {scaled(5)}
sleep 0.3
accept
wait in_call {scaled(5)}
m
sleep {scaled(0.2)}
hangup
wait idle {scaled(5)}
"""


def run_sim(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # The web page on a free port: 8443 may be another sim's.
        [sys.executable, "-m", "appliance", "sim", "--web-port", "0", *args],
        input=script,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


@pytest.mark.slow  # a real aiortc call
def test_sim_call_through_pipe(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    result = run_sim(SCRIPT, "--frames", str(frames), "--bob-answer-after", "0.3")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for line in (
        "panel: Setup()",
        "panel: Dial(to='client:bob')",
        "bob: received DTMF 5",
        "bob: received DTMF *",
        "bob calls you",
        "panel: Accept()",
        "panel: SetMute(muted=True)",
        # Vol+ when idle sets the ringer, Vol- in the call the call volume.
        "panel: SetVolume(role='ringtone', level=7,",
        "panel: SetVolume(role='speaker', level=5,",
        "wait idle: ok",
    ):
        assert line in out, out
    assert "FAILED" not in out
    screens = [
        ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("screen:")
    ]
    for screen in ("idle", "dialing", "in_call", "ringing"):
        assert screen in screens, screens
    # While bob calls, the ringer LED lights and the status LED blinks.
    assert "leds: ringer=on status=off" in out
    # Each frame is 32 lines of 128 half-block cells between bars.
    art = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert art and all(len(ln) == 130 for ln in art)
    assert len(art) % 32 == 0
    pngs = sorted(frames.glob("frame_*.png"))
    assert any("ringing" in p.name for p in pngs), pngs
    with Image.open(pngs[0]) as first:
        assert first.size == (128, 64)


def test_sim_wait_failure_exits_1() -> None:
    result = run_sim("wait in_call 0.5\n", "--no-ready")
    assert result.returncode == 1
    assert "wait in_call: FAILED (panel is offline)" in result.stdout


def test_export_screens(tmp_path: Path) -> None:
    result = run_sim("", "--export-screens", str(tmp_path))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    from appliance_dev.screen_samples import notice_samples, sample_views

    names = [*sample_views(), *notice_samples()]
    assert files == sorted(f"screen_{name}.png" for name in names)
    assert "screen_config_error.png" in files
    assert "screen_ringing.png" in files and "screen_in_call_volume.png" in files
    with Image.open(tmp_path / "screen_idle.png") as image:
        assert image.size == (512, 256)


def test_terminal_drawing_fits_narrow_terminals():
    from appliance.ui.screens import render
    from appliance_dev.screen_samples import sample_views
    from appliance_dev.terminal import half_block_art, quadrant_art, terminal_art

    image = render(sample_views()["idle"])
    full = terminal_art(image, 200)
    narrow = terminal_art(image, 100)
    assert full == half_block_art(image) and len(full[0]) == 128
    assert narrow == quadrant_art(image) and len(narrow[0]) == 64
    assert len(narrow) == 32
    # The same pixels: a lit quadrant cell wherever the 2x2 block has any lit pixel.
    pixels = image.convert("1")
    for row, line in enumerate(narrow):
        for col, char in enumerate(line):
            block = [
                pixels.getpixel((2 * col + dx, 2 * row + dy))
                for dx in (0, 1)
                for dy in (0, 1)
            ]
            assert (char != " ") == any(block)


def test_sim_missed_call_log_and_dnd() -> None:
    # bob calls, Hangup rejects: missed. Mute shows the log; Accept would call
    # bob back, Hangup leaves. Held # turns do-not-disturb on: bob's next call
    # never rings here.
    script = "\n".join(
        [
            "wait idle 20",
            "incoming",
            "wait ringing 10",
            "hangup",
            "wait idle 10",
            "mute",
            "wait call_log 10",
            "hangup",
            "wait idle 10",
            "dnd",
            "incoming",
            "sleep 1",
            "wait idle 10",
            "quit",
        ]
    )
    result = run_sim(script + "\n")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "panel: MarkMissedSeen()" in out, out
    assert "panel: SetDnd(on=True)" in out, out
    assert "panel: Decline(silent=False)" in out, out
    assert "FAILED" not in out


async def test_sim_serves_the_web_page_of_its_phone(tmp_path: Path) -> None:
    # The page the service serves, started the same way, on the sim's phone:
    # the first visit sets the password, and the status shows the sim.
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "appliance", "sim", "--web-port", "0"),
        *("--state-dir", str(state)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    out: list[str] = []

    async def read(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None  # drained to the end: a full pipe stalls the sim
        async for line in stream:
            out.append(line.decode(errors="replace"))

    readers = [
        asyncio.get_running_loop().create_task(read(s))
        for s in (process.stdout, process.stderr)
    ]

    def seen(pattern: str) -> re.Match[str] | None:
        return next(filter(None, (re.search(pattern, line) for line in out)), None)

    try:
        web_line = r"web page (https://127\.0\.0\.1:\d+/)"
        await wait_until(lambda: seen(web_line) or process.returncode is not None, 30)
        found = seen(web_line)
        assert found, "".join(out)
        url = found.group(1)
        process.stdin.write(b"wait idle 20\n")
        await wait_until(lambda: seen("wait idle: ") or process.returncode, 30)
        assert seen("wait idle: ok"), "".join(out)
        assert (state / "web-cert.pem").exists()
        key = state / "web-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        jar = aiohttp.CookieJar(unsafe=True)  # an address, not a host name
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(url, ssl=False) as answer:
                assert (answer.status, answer.url.path) == (200, "/setup")
                html = await answer.text()
            assert "id=repeat" in html
            csrf = re.search(r'name=csrf value="([^"]+)"', html)
            assert csrf, html
            password = "sim-page-password"
            form = {"password": password, "repeat": password, "csrf": csrf.group(1)}
            async with http.post(url + "setup", data=form, ssl=False) as answer:
                assert answer.url.path == "/status"
                html = await answer.text()
        assert '<td id="identity">desk</td>' in html, html
        assert '<td id="registration">ready</td>' in html, html
        assert (state / "web-password").read_text().startswith("scrypt$")
        process.stdin.write(b"quit\n")
        await process.stdin.drain()
        assert await asyncio.wait_for(process.wait(), scaled(30)) == 0
    finally:
        await stop_process(process, grace_s=scaled(10))
        await asyncio.gather(*readers, return_exceptions=True)
