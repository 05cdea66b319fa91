"""``appliance install`` / ``appliance uninstall``: the phone on an existing Debian.

What a phone needs, laid out the same way by this command (``sudo make
install`` on Raspberry Pi OS or Debian) and by the SD-card image
(``image/build``), so that docs/install.md describes one system:

========================================  ======================================
``/opt/appliance/venv``                   its own virtualenv: this repository's
                                          wheel with the ``hardware`` extra
                                          (lgpio, pyalsaaudio, gpiozero, luma),
                                          never the development tools of dev/
``/opt/appliance/releases/<version>``     the same wheel as the first release
                                          (``lib/``), ``current`` pointing at
                                          it: the unit runs what ``current``
                                          names, remote updates add releases
                                          beside it (docs/updates.md); owned
                                          by the ``appliance`` user
``/opt/appliance/{hw,docs}``              pin maps and the docs the unit names
``/etc/systemd/system/appliance.service`` the hardened unit, enabled
``/etc/sysusers.d/appliance.conf``        the ``appliance`` user in the audio,
                                          gpio and i2c groups (sysusers.d(5)
                                          creates the groups that are missing)
``/etc/appliance/appliance.toml``         written only if absent: the user's
``/var/lib/appliance``                    state (token, provisioned config,
                                          panel state), 0700, kept on uninstall
                                          unless ``--purge``
========================================  ======================================

Every path is prefixed with ``--root`` (a scratch tree in tests, the image's
root in the recipe). With ``--chroot`` the virtualenv is created by the
target's own Python inside the root (a foreign-architecture image through
qemu-user), so its scripts name their real paths.

Idempotent: a second run changes nothing. Files are rewritten only when their
content differs, and the wheel is installed again only when its content
(not its zip timestamps) changed, which ``/opt/appliance/installed.json``
records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.files import write_atomic

__all__ = [
    "Layout",
    "add_install_parser",
    "add_uninstall_parser",
    "install",
    "uninstall",
    "wheel_digest",
]

PREFIX = "/opt/appliance"
VENV = f"{PREFIX}/venv"
STAMP = f"{PREFIX}/installed.json"
UNIT = "/etc/systemd/system/appliance.service"
SYSUSERS = "/etc/sysusers.d/appliance.conf"
CONFIG_DIR = "/etc/appliance"
CONFIG = f"{CONFIG_DIR}/appliance.toml"
STATE = "/var/lib/appliance"
USER = "appliance"
#: Files of the source tree copied under PREFIX (the unit's Documentation=).
SHIPPED = ("README.md", "docs", "hw")

Report = Callable[[str], None]


def say(line: str) -> None:
    """The default :data:`Report`: one line per change on stdout."""
    sys.stdout.write(line + "\n")


class InstallError(Exception):
    """A step failed; the message says which and why (exit status 1)."""


@dataclass(frozen=True)
class Layout:
    """Where things go: every absolute path below ``root``."""

    root: Path = Path("/")

    def __call__(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def is_live(self) -> bool:
        """The running system itself (so systemd may be told)."""
        return self.root.resolve() == Path("/")


def source_tree() -> Path | None:
    """The checkout this package runs from, if it is one (has systemd/)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "systemd" / "appliance.service").is_file() else None


def wheel_digest(wheel: Path) -> str:
    """SHA-256 over the wheel's member names and contents, not its timestamps."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name) + b"\0")
    return digest.hexdigest()


def build_wheel(source: Path, out: Path) -> Path:
    """This repository's wheel, built offline with the installed setuptools."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        "build the wheel (needs setuptools: make setup)",
    )
    (wheel,) = out.glob("appliance-*.whl")
    return wheel


def _run(argv: Sequence[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise InstallError(f"cannot {what}: " + " / ".join(detail))


def _write(path: Path, data: bytes, mode: int, report: Report) -> None:
    """Write ``path`` only if its content or mode differs."""
    if path.is_file() and path.read_bytes() == data:
        if path.stat().st_mode & 0o7777 != mode:
            path.chmod(mode)
        return
    write_atomic(path, data, mode=mode)
    report(f"wrote {path}")


def _copy_tree(src: Path, dst: Path, report: Report) -> None:
    for item in sorted(src.rglob("*")):
        if item.is_file() and "__pycache__" not in item.parts:
            _write(dst / item.relative_to(src), item.read_bytes(), 0o644, report)


def _ids(layout: Layout, name: str) -> tuple[int, int]:
    for line in layout("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise InstallError(f"user {name} was not created in {layout('/etc/passwd')}")


def _systemctl(layout: Layout, *args: str) -> list[str]:
    argv = ["systemctl"]
    if not layout.is_live:
        argv.append(f"--root={layout.root}")
    return [*argv, *args]


def _systemd_runs(layout: Layout) -> bool:
    return layout.is_live and Path("/run/systemd/system").is_dir()


# ------------------------------------------------------------------- install


def install(
    layout: Layout,
    *,
    wheel: Path,
    source: Path,
    python: str = "/usr/bin/python3",
    chroot: bool = False,
    report: Report = say,
) -> None:
    """Install or update the phone below ``layout.root``; see the module doc.

    Raises:
        InstallError: a step failed (creating the user, the venv, pip, systemctl).
    """
    # The user first: the state directory is created for it.
    sysusers = (source / "systemd" / "appliance.sysusers.conf").read_bytes()
    _write(layout(SYSUSERS), sysusers, 0o644, report)
    argv = ["systemd-sysusers", str(layout(SYSUSERS))]
    if not layout.is_live:
        argv.insert(1, f"--root={layout.root}")
    _run(argv, f"create the user {USER} (systemd-sysusers)")
    _install_venv(layout, wheel, python=python, chroot=chroot, report=report)
    for name in SHIPPED:
        item = source / name
        if item.is_dir():
            _copy_tree(item, layout(f"{PREFIX}/{name}"), report)
        elif item.is_file():
            _write(layout(f"{PREFIX}/{name}"), item.read_bytes(), 0o644, report)
    unit = (source / "systemd" / "appliance.service").read_bytes()
    _write(layout(UNIT), unit, 0o644, report)
    config = layout(CONFIG)
    if config.exists():
        report(f"kept {config} (never overwritten)")
    else:
        template = (source / "image" / "appliance.toml").read_bytes()
        _write(config, template, 0o644, report)
    state = layout(STATE)
    state.mkdir(parents=True, exist_ok=True)
    uid, gid = _ids(layout, USER)
    os.chown(state, uid, gid)
    state.chmod(0o700)
    if _systemd_runs(layout):
        _run(["systemctl", "daemon-reload"], "reload systemd")
    _run(_systemctl(layout, "enable", "--quiet", "appliance.service"), "enable")
    report("appliance.service enabled; it starts at boot once the token is in place")


def _install_venv(
    layout: Layout, wheel: Path, *, python: str, chroot: bool, report: Report
) -> None:
    digest = wheel_digest(wheel)
    stamp = layout(STAMP)
    venv_python = layout(f"{VENV}/bin/python")
    try:
        recorded = json.loads(stamp.read_text()).get("wheel_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    version = wheel.name.split("-")[1]
    release_lib = layout(f"{PREFIX}/releases/{version}/lib")
    if recorded == digest and venv_python.exists() and release_lib.is_dir():
        report(f"{VENV} is up to date")
        _install_release(layout, wheel, version, chroot=chroot, fresh=False)
        return

    def inside(*argv: str) -> list[str]:
        return ["chroot", str(layout.root), *argv] if chroot else list(argv)

    venv = VENV if chroot else str(layout(VENV))
    if not venv_python.exists():
        _run(inside(python, "-m", "venv", venv), f"create {VENV}")
        report(f"created {VENV}")
    with tempfile.TemporaryDirectory(dir=layout("/tmp") if chroot else None) as tmp:
        staged = Path(tmp) / wheel.name
        shutil.copyfile(wheel, staged)
        target = f"/{staged.relative_to(layout.root)}" if chroot else str(staged)
        pip = [f"{venv}/bin/python", "-m", "pip", "install", "--quiet"]
        pip += ["--disable-pip-version-check", "--no-warn-script-location"]
        # Dependencies as needed, then this wheel again even if the version
        # number did not change (a rebuilt checkout).
        _run(inside(*pip, f"{target}[hardware]"), "install the dependencies")
        _run(inside(*pip, "--force-reinstall", "--no-deps", target), "install")
        _install_release(layout, staged, version, chroot=chroot, fresh=True)
    _write(
        stamp,
        json.dumps({"version": version, "wheel_sha256": digest}, indent=1).encode(),
        0o644,
        report,
    )
    report(f"installed appliance {version} in {VENV}")


def _install_release(
    layout: Layout, wheel: Path, version: str, *, chroot: bool, fresh: bool
) -> None:
    """``releases/<version>/lib`` from ``wheel``, and ``current`` if unset.

    ``fresh``: the wheel changed, so a release directory of the same version
    is installed again (a rebuilt checkout; ``current/lib`` comes first on
    the service's path). The release tree and ``/opt/appliance`` itself
    belong to the service user, whose updater adds releases and renames the
    links (the venv stays root's).
    """
    base = layout(PREFIX)
    release = base / "releases" / version
    if fresh or not (release / "lib").is_dir():
        partial = base / "releases" / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        inner = f"/{partial.relative_to(layout.root)}" if chroot else str(partial)
        staged = f"/{wheel.relative_to(layout.root)}" if chroot else str(wheel)
        argv = [f"{VENV if chroot else layout(VENV)}/bin/python", "-m", "pip"]
        argv += ["install", "--quiet", "--no-deps", "--no-compile"]
        argv += ["--disable-pip-version-check", "--target", f"{inner}/lib", staged]
        _run(["chroot", str(layout.root), *argv] if chroot else argv, "install")
        shutil.rmtree(release, ignore_errors=True)
        partial.rename(release)
    current = base / "current"
    if not current.is_symlink():
        link = base / ".current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("releases") / version)
        link.replace(current)
    uid, gid = _ids(layout, USER)
    releases = base / "releases"
    for path in (base, current, releases, *releases.rglob("*")):
        if path.lstat().st_uid != uid:
            os.chown(path, uid, gid, follow_symlinks=False)


# ----------------------------------------------------------------- uninstall


def uninstall(layout: Layout, *, purge: bool = False, report: Report = say) -> None:
    """Remove the software; keep config, state and user unless ``purge``."""
    if layout(UNIT).exists():
        argv = _systemctl(layout, "disable", "--quiet", "appliance.service")
        if _systemd_runs(layout):
            argv.insert(-1, "--now")
        _run(argv, "disable appliance.service")
    for path in (layout(UNIT), layout(SYSUSERS)):
        if path.exists():
            path.unlink()
            report(f"removed {path}")
    if layout(PREFIX).exists():
        shutil.rmtree(layout(PREFIX))
        report(f"removed {layout(PREFIX)}")
    if _systemd_runs(layout):
        _run(["systemctl", "daemon-reload"], "reload systemd")
    if not purge:
        for kept in (CONFIG_DIR, STATE):
            if layout(kept).exists():
                report(f"kept {layout(kept)} (--purge removes it)")
        return
    for path in (layout(CONFIG_DIR), layout(STATE)):
        if path.exists():
            shutil.rmtree(path)
            report(f"removed {path}")
    if any(
        line.startswith(f"{USER}:")
        for line in layout("/etc/passwd").read_text().splitlines()
    ):
        argv = ["userdel", USER]
        if not layout.is_live:
            argv[1:1] = ["--root", str(layout.root)]
        _run(argv, f"remove the user {USER}")
        report(f"removed the user {USER}")


# ----------------------------------------------------------------------- CLI

_Subparsers = Any  # argparse's _SubParsersAction is private


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="prefix every path with DIR (an image's root; default /)",
    )


def add_install_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance install``."""
    parser = subparsers.add_parser(
        "install",
        help="install the phone service on this Debian/Raspberry Pi OS (root)",
        description="Install /opt/appliance with its own virtualenv, the "
        "appliance user (groups audio, gpio, i2c), the systemd unit (enabled), "
        "and /etc/appliance/appliance.toml if absent. Safe to run again.",
    )
    _add_root(parser)
    parser.add_argument(
        "--source", type=Path, metavar="DIR", help="the repository (default: this one)"
    )
    parser.add_argument(
        "--wheel", type=Path, metavar="FILE", help="a built wheel (default: build it)"
    )
    parser.add_argument(
        "--python", default="/usr/bin/python3", help="the Python of the venv"
    )
    parser.add_argument(
        "--chroot",
        action="store_true",
        help="create the venv inside --root with chroot (image builds)",
    )
    parser.set_defaults(handler=run_install)


def add_uninstall_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance uninstall``."""
    parser = subparsers.add_parser(
        "uninstall",
        help="remove the phone service (config and state stay unless --purge)",
        description="Disable and remove the unit and /opt/appliance. "
        "/etc/appliance and /var/lib/appliance stay, and the user, unless --purge.",
    )
    _add_root(parser)
    parser.add_argument(
        "--purge", action="store_true", help="also remove config, state and the user"
    )
    parser.set_defaults(handler=run_uninstall)


def _check_root(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise ConfigError("install", "must run as root (sudo make install)")
    if not layout.root.is_dir():
        raise ConfigError("--root", f"{layout.root} is not a directory")


def run_install(args: argparse.Namespace) -> int:
    """Handler of ``appliance install``."""
    layout = Layout(args.root)
    source = args.source or source_tree()
    try:
        _check_root(layout)
        if source is None or not (source / "systemd" / "appliance.service").is_file():
            raise ConfigError("--source", "give the repository holding systemd/")
    except ConfigError as exc:
        sys.stderr.write(f"appliance: error: {exc}\n")
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = args.wheel or build_wheel(source, Path(tmp))
            install(
                layout,
                wheel=wheel,
                source=source,
                python=args.python,
                chroot=args.chroot,
            )
    except (InstallError, OSError) as exc:
        sys.stderr.write(f"appliance: error: {exc}\n")
        return 1
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    """Handler of ``appliance uninstall``."""
    layout = Layout(args.root)
    try:
        _check_root(layout)
    except ConfigError as exc:
        sys.stderr.write(f"appliance: error: {exc}\n")
        return 2
    try:
        uninstall(layout, purge=args.purge)
    except (InstallError, OSError) as exc:
        sys.stderr.write(f"appliance: error: {exc}\n")
        return 1
    return 0
