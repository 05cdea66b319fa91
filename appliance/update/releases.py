"""Release directories on the phone, and the atomic switch between them.

Layout under ``ROOT`` (``/`` on a phone, a temp dir in tests)::

    opt/appliance/releases/<version>/   manifest.json, wheels/, lib/
    opt/appliance/current  -> releases/<version>    the service runs this
    opt/appliance/previous -> releases/<version>    what a rollback returns to

The service starts ``PYTHONPATH=/opt/appliance/current/lib python -m
appliance run`` (docs/updates.md). A new release is unpacked and installed
beside the running one, in a ``.partial`` directory renamed into place when
complete, so a cut during install leaves only a directory to delete. The
switch is a new symlink renamed over ``current`` (rename(2) is atomic: after
a power cut ``current`` names either the old release or the new one, never
neither). Nothing from the artifact runs while it is installed: the tarball
is unpacked with tarfile's ``data`` filter (no links out, no devices, no
setuid bits), wheels are checked against the manifest and installed by pip
from that directory only, binary wheels only (no build step, no setup.py).

``previous`` names a release that passed its health check on this phone and
is not ``current`` (or nothing): :meth:`Releases.switch` points it at the
release it replaces, and a rollback points it where the update machine says
(:meth:`Releases.link_previous`, before :meth:`Releases.switch_back`), never
at a release that failed its trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from appliance.errors import UpdateError
from appliance.files import fsync_dir

__all__ = ["Releases", "pip_command"]

logger = logging.getLogger(__name__)


def pip_command(directory: Path, *, complete: bool) -> list[str]:
    """The pip command that installs the unpacked release in ``directory``.

    Offline (``--no-index``, the release's own wheels), binary wheels only, no
    byte-compiling, and ``--no-cache-dir``: an install that never repeats has
    no use for pip's cache, which would live under the service user's home
    on the phone's small storage (read-only on the image). pip does not cache
    local wheels today; the flag keeps it so whatever pip's defaults become.
    """
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
        "--only-binary=:all:", "--no-compile", "--no-cache-dir",
        "--disable-pip-version-check",
        "--find-links", str(directory / "wheels"),
        "--target", str(directory / "lib"),
    ]  # fmt: skip
    if not complete:
        # The wheel alone: dependencies come from the image's environment.
        command.append("--no-deps")
    command.append("appliance")
    return command


class Releases:
    """The release directories and links under ``root``."""

    def __init__(self, root: Path) -> None:
        self.base = root / "opt" / "appliance"
        self.dir = self.base / "releases"
        self.current_link = self.base / "current"
        self.previous_link = self.base / "previous"

    def _target(self, link: Path) -> str:
        try:
            return link.readlink().name
        except FileNotFoundError:
            return ""

    @property
    def current(self) -> str:
        """The version ``current`` points at ("" before the first release)."""
        return self._target(self.current_link)

    @property
    def previous(self) -> str:
        """The version ``previous`` points at ("" when there is none)."""
        return self._target(self.previous_link)

    def installed(self) -> list[str]:
        """Versions with a complete directory."""
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if not p.name.startswith("."))

    def install(self, artifact: Path, version: str) -> Path:
        """Unpack and install ``artifact`` as ``releases/<version>``.

        The artifact was verified by TUF before this is called. Returns the
        release directory.
        """
        if not hasattr(tarfile, "data_filter"):  # PEP 706: Python 3.11.4+
            raise UpdateError("this Python cannot unpack a release safely")
        self.dir.mkdir(parents=True, exist_ok=True)
        if version in (self.current, self.previous) and (self.dir / version).exists():
            return self.dir / version  # already there, and in use: keep it
        partial = self.dir / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            with tarfile.open(artifact, "r:gz") as tar:
                tar.extractall(partial, filter="data")
            manifest = json.loads((partial / "manifest.json").read_text())
            if manifest.get("version") != version:
                raise UpdateError(
                    f"artifact holds {manifest.get('version')}, expected {version}"
                )
            self._check_wheels(partial, manifest)
            self._pip_install(partial, complete=bool(manifest.get("complete")))
        except (OSError, tarfile.TarError, ValueError, KeyError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise UpdateError(f"install of {version} failed: {exc}") from exc
        except UpdateError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        dest = self.dir / version
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
        fsync_dir(self.dir)
        return dest

    @staticmethod
    def _check_wheels(directory: Path, manifest: dict[str, object]) -> None:
        wheels = manifest.get("wheels")
        if not isinstance(wheels, dict):
            raise UpdateError("manifest lists no wheels")
        found = {p.name for p in (directory / "wheels").iterdir()}
        if found != set(wheels):
            raise UpdateError("wheels differ from the manifest")
        for name, digest in wheels.items():
            data = (directory / "wheels" / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise UpdateError(f"{name} differs from the manifest")

    @staticmethod
    def _pip_install(directory: Path, *, complete: bool) -> None:
        command = pip_command(directory, complete=complete)
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=900)
        except subprocess.CalledProcessError as exc:
            tail = exc.stderr.decode(errors="replace").strip().splitlines()[-2:]
            raise UpdateError("pip install failed: " + " / ".join(tail)) from exc

    def _point(self, link: Path, version: str) -> None:
        if not (self.dir / version).is_dir():
            raise UpdateError(f"release {version} is not installed")
        tmp = link.with_name(f".{link.name}.new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("releases") / version)
        tmp.replace(link)  # rename(2): atomic
        fsync_dir(self.base)

    def switch(self, version: str) -> None:
        """Make ``version`` current; the release it replaces becomes previous."""
        old = self.current
        if old == version:
            return
        if old:
            self._point(self.previous_link, old)
        self._point(self.current_link, version)

    def switch_back(self, version: str) -> None:
        """Make ``version`` current again (a rollback); ``previous`` is left
        to :meth:`link_previous`."""
        self._point(self.current_link, version)

    def link_previous(self, version: str) -> None:
        """Point ``previous`` at ``version``; remove it for "".

        A release no longer on disk leaves no ``previous`` (logged) rather
        than failing: this runs on the way back to a working release.
        """
        if version and (self.dir / version).is_dir():
            self._point(self.previous_link, version)
            return
        if version:
            logger.warning("update: release %s is gone: no previous release", version)
        if self.previous_link.is_symlink():
            self.previous_link.unlink()
            fsync_dir(self.base)

    def prune(self) -> None:
        """Delete every release but ``current`` and ``previous``."""
        keep = {self.current, self.previous}
        for version in self.installed():
            if version not in keep:
                shutil.rmtree(self.dir / version, ignore_errors=True)
        for partial in self.dir.glob(".*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
