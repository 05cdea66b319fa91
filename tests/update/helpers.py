"""Helpers for the update tests: small real wheels, and repositories made by
the release tool itself (``appliance release ...`` through ``cli.main``).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from appliance.cli import main


def make_wheel(out: Path, version: str, *, body: str = "") -> Path:
    """A minimal but valid wheel of ``appliance`` at ``version`` (PEP 427).

    Its one module records the version, so a test can tell which release a
    directory holds after it is installed.
    """
    out.mkdir(parents=True, exist_ok=True)
    dist = f"appliance-{version}.dist-info"
    files = {
        "appliance_release/__init__.py": f"VERSION = {version!r}\n{body}",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: appliance\n"
        f"Version: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{name},sha256={digest.rstrip(b'=').decode()},{len(text)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = out / f"appliance-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def release(*argv: str | Path) -> None:
    """Run ``appliance release ARGV...``; fail the test unless it succeeds."""
    status = main(["release", *map(str, argv)])
    assert status == 0, f"appliance release {argv} exited {status}"


class Publisher:
    """A repository in a temp dir, its keys, and a way to add versions."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.repo = base / "repo"
        self.keys = base / "keys"
        self.root_keys = base / "offline-root-keys"
        release(
            "init",
            "--repo",
            self.repo,
            "--keys",
            self.keys,
            "--root-keys",
            self.root_keys,
        )

    def add(self, version: str, *, body: str = "") -> None:
        wheel = make_wheel(self.base / "wheels" / version, version, body=body)
        release("add", "--repo", self.repo, "--keys", self.keys, "--wheel", wheel)

    def timestamp(self) -> None:
        release("timestamp", "--repo", self.repo, "--keys", self.keys)

    def rotate(self, role: str) -> None:
        release(
            "rotate",
            "--repo",
            self.repo,
            "--keys",
            self.keys,
            "--root-keys",
            self.root_keys,
            "--role",
            role,
        )

    @property
    def root(self) -> bytes:
        return (self.repo / "metadata" / "1.root.json").read_bytes()
