"""``appliance install`` / ``uninstall`` on a scratch root, as root would run them.

A tree with a Debian-like ``/etc/passwd`` and ``/etc/group`` (an ``audio``
group, no ``gpio`` nor ``i2c``) stands for the system; ``--root`` prefixes
every path, so the real system is not touched. The real command runs twice
(the tree must not change), with the user's config edited in between (it must
be kept), then uninstall keeps config and state and ``--purge`` removes them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import __version__

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="creating users and chown need root"
)


def appliance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path below ``root``: mode, owner and content (or link target)."""
    tree: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: object = str(path.readlink())
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = None
        tree[str(path.relative_to(root))] = (
            info.st_mode,
            info.st_uid,
            info.st_gid,
            content,
        )
    return tree


def members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _gid, users = line.split(":")
        if name == group:
            return users.split(",") if users else []
    raise AssertionError(f"no group {group}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\naudio:x:29:\n")
    return root


@pytest.mark.slow  # pip installs the runtime dependencies (from its cache)
def test_install_twice_then_uninstall_keeps_then_purges(root: Path) -> None:
    first = appliance("install", "--root", str(root))
    assert first.returncode == 0, first.stderr

    # The user, in the groups of the devices (gpio and i2c created here).
    passwd = (root / "etc/passwd").read_text()
    assert "\nappliance:" in passwd
    for group in ("audio", "gpio", "i2c"):
        assert members(root, group) == ["appliance"], group
    # The unit, enabled, and what it runs.
    unit = root / "etc/systemd/system/appliance.service"
    assert unit.read_text() == (REPO / "systemd/appliance.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/appliance.service"
    assert str(wants.readlink()) == "/etc/systemd/system/appliance.service"
    venv = root / "opt/appliance/venv"
    site = next((venv / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    # Runtime dependencies with the hardware extra; none of the dev tools.
    assert {"appliance", "lgpio", "pyalsaaudio", "gpiozero", "luma_oled"} <= installed
    assert not installed & {"pytest", "mypy", "ruff", "pesq", "appliance_devtools"}
    assert not (site / "appliance_dev").exists()
    # The same code as the first release, `current`, the updater's to replace.
    opt = root / "opt/appliance"
    assert str((opt / "current").readlink()) == f"releases/{__version__}"
    assert (opt / "current/lib/appliance/__init__.py").is_file()
    uid = int(passwd.split("\nappliance:")[1].split(":")[1])
    assert {p.lstat().st_uid for p in (opt, opt / "current", opt / "releases")} == {uid}
    assert (opt / "venv").stat().st_uid == 0
    # State for the service user only; the config is valid for the venv's own
    # command (its entry point names the venv's Python).
    state = root / "var/lib/appliance"
    uid = int(passwd.split("\nappliance:")[1].split(":")[1])
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (uid, 0o700)
    config = root / "etc/appliance/appliance.toml"
    shown = subprocess.run(
        [venv / "bin/appliance", "show-config", "--config", config],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert 'input_device = "alsa:default"' in shown.stdout

    # The user edits the config; a second install changes nothing at all.
    config.write_text('[device]\ninput_device = "alsa:plughw:1,0"\n')
    before = snapshot(root)
    second = appliance("install", "--root", str(root))
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout and "kept" in second.stdout
    assert snapshot(root) == before

    removed = appliance("uninstall", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/appliance").exists()
    assert not unit.exists() and not wants.is_symlink()
    assert config.read_text() == '[device]\ninput_device = "alsa:plughw:1,0"\n'
    assert state.is_dir() and "\nappliance:" in (root / "etc/passwd").read_text()
    again = appliance("uninstall", "--root", str(root))
    assert again.returncode == 0, again.stderr

    purged = appliance("uninstall", "--root", str(root), "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not config.exists() and not state.exists()
    assert "\nappliance:" not in (root / "etc/passwd").read_text()


def test_install_refuses_a_missing_root(tmp_path: Path) -> None:
    result = appliance("install", "--root", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"appliance: error: --root: {tmp_path / 'nowhere'} is not a directory"
    )
