"""Release artifacts: the phone software as one tarball of wheels with a manifest.

A release is what goes into ``/opt/appliance/releases/<version>``: the wheel of
this package, and with ``complete`` also the wheels of every dependency for
one platform (``pip wheel .[hardware]`` run on, or for, the phone's
architecture). Wheels, not a prebuilt virtualenv: installing a wheel runs no
code from it (no ``setup.py``), so nothing from the repository is executed
while a release is unpacked, and the tarball stays independent of the path
it is installed under.

Layout of ``appliance-<version>-<platform>.tar.gz``::

    manifest.json   {"format": 1, "name", "version", "platform", "python",
                     "complete", "wheels": {file name: sha256}}
    wheels/*.whl

The manifest is also copied into the TUF target's ``custom`` field, so the
phone knows the version of what it downloads before it unpacks anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import UpdateError
from appliance.update.machine import parse_version

__all__ = [
    "MANIFEST",
    "Artifact",
    "build_artifact",
    "build_wheels",
    "host_platform",
    "wheel_version",
]

MANIFEST = "manifest.json"


def host_platform() -> str:
    """This machine's wheel platform tag, e.g. ``linux_aarch64``."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def wheel_version(wheel: Path, name: str = "appliance") -> str:
    """The version in a wheel's ``METADATA`` (PEP 566), read without installing."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(metadata) != 1:
            raise UpdateError(f"{wheel.name}: not a wheel (no METADATA)")
        text = archive.read(metadata[0]).decode()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if fields.get("Name", "").lower() != name:
        raise UpdateError(f"{wheel.name}: is {fields.get('Name')!r}, not {name!r}")
    return fields["Version"]


def build_wheels(source: Path, out: Path, *, with_dependencies: bool) -> list[Path]:
    """Build this package's wheel (and its dependencies' wheels) into ``out``.

    Without dependencies the build uses the installed setuptools and no
    index; with them pip resolves ``.[hardware]`` from the configured index,
    for this machine's platform.
    """
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out)]
    if with_dependencies:
        command.append(f"{source}[hardware]")
    else:
        command += ["--no-deps", "--no-build-isolation", "--no-index", str(source)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise UpdateError("pip wheel failed: " + " / ".join(tail)) from exc
    return sorted(out.glob("*.whl"))


@dataclass(frozen=True)
class Artifact:
    """A built release tarball and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        """The release version (the package's)."""
        return str(self.manifest["version"])

    @property
    def platform(self) -> str:
        """``any`` or a wheel platform tag."""
        return str(self.manifest["platform"])

    @property
    def target_path(self) -> str:
        """Where the artifact lives in the TUF repository (version-named)."""
        return f"releases/{self.version}/{self.path.name}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_artifact(
    wheels: Sequence[Path], out_dir: Path, *, complete: bool, platform: str
) -> Artifact:
    """Pack ``wheels`` (one of them this package's) into a release tarball."""
    ours = [w for w in wheels if w.name.lower().startswith("appliance-")]
    if len(ours) != 1:
        raise UpdateError("a release holds exactly one appliance wheel")
    version = wheel_version(ours[0])
    parse_version(version)
    manifest: dict[str, Any] = {
        "format": 1,
        "name": "appliance",
        "version": version,
        "platform": platform,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "complete": complete,
        "wheels": {w.name: _sha256(w) for w in sorted(wheels)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"appliance-{version}-{platform}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
        for wheel in sorted(wheels):
            tar.add(wheel, arcname=f"wheels/{wheel.name}", recursive=False)
    return Artifact(path, manifest)
