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
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | Path, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (bytes, or a file to copy), file mode ``mode``.

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
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
