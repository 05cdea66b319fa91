"""Durable file writes: a power cut leaves the old file or the new one, never half.

A phone on a desk is unplugged without warning, so everything it keeps
(credentials, volume levels, update state, repository metadata) is written
the same way: a temporary file in the same directory, written and fsynced,
renamed over the target (rename is atomic within a file system, POSIX
rename(2)), then the directory fsynced so that the rename itself survives.
Blocking I/O: call it off the event loop.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from appliance.errors import ConfigError

__all__ = ["PRIVATE_MODE", "check_private", "fsync_dir", "read_private", "write_atomic"]

#: The mode a file holding a secret needs: read and write for its owner only.
PRIVATE_MODE = 0o600


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes | Path,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` with ``data`` (bytes, or a file to copy), file mode ``mode``.

    ``owner`` (uid, gid) gives the new file to another user before it takes
    the old one's place (root writing a file for the service's user).

    Raises:
        OSError: the directory is not writable or the disk is full; the
            previous file is left as it was and no temporary file remains.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(mode)
        if owner is not None:
            os.chown(tmp, *owner)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def check_private(path: Path, key: str, mode: int) -> None:
    """Refuse a secret-holding file that its group or other users may open.

    Args:
        path: the file (for the message).
        key: the option or config key that named it (for the message).
        mode: its ``st_mode``.

    Raises:
        ConfigError: naming ``key``, the file's mode and the one it needs.
    """
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            key,
            f"{path} holds a secret and its mode is {stat.S_IMODE(mode):04o}: "
            f"it needs mode {PRIVATE_MODE:04o}, no access for group or others "
            f"(chmod {PRIVATE_MODE:o} {path})",
        )


def read_private(path: Path, key: str) -> str:
    """Read a secret (one line, stripped) from a file only its owner may open.

    Secrets are read from files (or the environment), never taken on a
    command line, where every user sees them in ``ps``.

    Raises:
        ConfigError: naming ``key``: missing or unreadable, open to group or
            others (:func:`check_private`), or empty.
    """
    try:
        with path.open(encoding="utf-8") as file:
            check_private(path, key, os.fstat(file.fileno()).st_mode)
            text = file.read().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if not text:
        raise ConfigError(key, f"{path} is empty")
    return text
