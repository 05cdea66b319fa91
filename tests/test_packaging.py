"""What ``pip install .`` puts on a phone: the firmware, and no development tools.

Builds the wheel from this checkout (no network: the installed setuptools,
no build isolation) and reads its file list and entry points.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from appliance.installer import build_wheel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # The same build as `appliance install` makes for the phone.
    return zipfile.ZipFile(build_wheel(ROOT, tmp_path_factory.mktemp("wheel")))


def test_the_phone_package_holds_no_development_tools(wheel):
    names = wheel.namelist()
    assert any(n == "appliance/phone/device.py" for n in names)
    assert any(n == "appliance/hardware/mock.py" for n in names)  # fake beside real
    for tool in ("appliance_dev/", "rig.py", "demo.py", "sim.py", "dtmf_detect.py"):
        assert not [n for n in names if tool in n], tool
    assert not [n for n in names if n.startswith("tests/")]


def test_the_alsa_backend_is_declared_by_name(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[appliance.audio_backends]" in text
    assert "alsa = appliance.hardware.alsa_devices:BACKEND" in text
    assert "appliance.commands" not in text  # the dev commands come from dev/
