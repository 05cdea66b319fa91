"""The systemd unit: hardened (a score systemd computes) yet still a phone.

``systemd-analyze security --offline=yes`` scores what the unit allows from 0
(locked) to 10 (exposed). The score is held at 2.0 or less, and the same unit
must keep granting what the phone uses: the sound cards, GPIO chips and I2C
buses with their groups, the network families, a writable state and working
directory (lgpio's pipes), and DSCP marks, which need no capability. A fatal
configuration error must stop the unit, not loop: ``appliance run`` exits 2
with one clear line, and the unit does not restart on 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.hardware.alsa_pcm import RT_PRIORITY
from appliance_dev.unit_file import UNIT, unit_nice, unit_settings

MAX_EXPOSURE = 2.0


def exposure(path: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        if "Overall exposure level" in line:
            # "→ Overall exposure level for appliance.service: 1.5 OK 🙂"
            return float(line.rsplit(":", 1)[1].split()[0])
    raise AssertionError(f"no score in: {result.stdout}{result.stderr}")


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is part of the systemd package, absent here",
)


@needs_analyze
def test_exposure_score_is_at_most_two(tmp_path: Path) -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE
    # The check can fail: the same unit without its hardening scores high.
    bare = tmp_path / "appliance.service"
    keep = ("Type=", "User=", "ExecStart=", "[", "    --")
    bare.write_text(
        "\n".join(
            line for line in UNIT.read_text().splitlines() if line.startswith(keep)
        )
        + "\n"
    )
    assert exposure(bare) > 8.0


def test_unit_grants_what_the_phone_uses() -> None:
    s = unit_settings()
    # Devices: every sound card, GPIO chip and I2C bus, by major name.
    assert s["DevicePolicy"] == ["closed"]
    assert {"char-alsa rw", "char-gpiochip rw", "char-i2c rw"} <= set(s["DeviceAllow"])
    assert "PrivateDevices" not in s  # it would hide /dev/snd
    assert s["SupplementaryGroups"][0].split() == ["audio", "gpio", "i2c"]
    # Writable places: state, and a working directory for lgpio's pipes.
    assert s["StateDirectory"] == ["appliance"]
    assert s["RuntimeDirectory"] == ["appliance"]
    assert s["WorkingDirectory"] == ["/run/appliance"]
    assert "LG_WD=/run/appliance" in s["Environment"]
    assert s["ProtectSystem"] == ["strict"]
    exec_start = s["ExecStart"][0].split()
    assert exec_start[:2] == ["/opt/appliance/venv/bin/appliance", "run"]
    assert "/var/lib/appliance/provisioned.toml" in exec_start
    # The network: IPv4/IPv6 for calls, netlink for getifaddrs(), UNIX for
    # the journal and the notify socket; no capability (DSCP needs none).
    assert set(s["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    assert s["CapabilityBoundingSet"] == [""]
    assert "PrivateNetwork" not in s and "IPAddressDeny" not in s
    # gpiozero reads the board revision under /proc/device-tree.
    assert "ProcSubset" not in s
    assert s["Type"] == ["notify"] and s["WatchdogSec"] == ["30"]
    assert s["TimeoutStartSec"] == ["180"]  # a slow board's first start fits
    # The ALSA I/O threads may take SCHED_FIFO at their priority, no higher.
    assert s["LimitRTPRIO"] == [str(RT_PRIORITY)]
    assert s["RestrictRealtime"] == ["no"]
    assert s["SystemCallFilter"][-1] == "sched_setscheduler"


def test_dscp_marks_need_no_capability(tmp_path: Path) -> None:
    """AF31 and EF stick on sockets of a user with no capability at all."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv is part of util-linux (essential in Debian)"
    probe = (
        "import socket\n"
        "for fam, level, opt in ((socket.AF_INET, socket.IPPROTO_IP, socket.IP_TOS),"
        " (socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_TCLASS)):\n"
        "    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n"
        "        s = socket.socket(fam, kind)\n"
        "        for tos in (0x68, 0xB8):\n"
        "            s.setsockopt(level, opt, tos)\n"
        "            assert s.getsockopt(level, opt) == tos, (fam, kind, tos)\n"
        "        s.close()\n"
        "print('marked')\n"
    )
    result = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            sys.executable,
            "-I",
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "marked"


def test_a_bad_config_stops_the_unit_with_one_clear_line(tmp_path: Path) -> None:
    """The real ``appliance run``: exit status 2, which the unit never restarts."""
    config = tmp_path / "appliance.toml"
    config.write_text('[device]\nsignaling_url = "ws://127.0.0.1:9/signal"\n[devise]\n')
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    settings = unit_settings()
    assert str(result.returncode) in settings["RestartPreventExitStatus"][0].split()
    assert settings["Restart"] == ["always"]  # 2 is the one status that stops it
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith("appliance: error:")
    assert "devise" in lines[0] and "device" in lines[0]  # names the key, hints


def test_the_suite_runs_the_phone_at_the_units_priority() -> None:
    # conftest.py gives the test process the unit's Nice= (inherited by the
    # phone, exchange and rig processes it starts), so that a busy machine
    # tests the phone as systemd runs it. A voice phone outranks other work.
    assert unit_nice() < 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == unit_nice()
