"""What the user sets on the front panel and the phone keeps across restarts.

Today that is the volume level of each role (Vol+/Vol-). A desk phone that
forgets its ringer volume on every power cut is a phone that rings at full
volume in a quiet office, so the levels live in a small JSON file
(``ui.state_file``, by default in the service's StateDirectory).

Writes are atomic: a temporary file in the same directory, fsync, rename,
fsync of the directory, so a power cut leaves the old file or the new one,
never half of one. A file that cannot be parsed is moved aside to
``NAME.bad`` (kept for diagnosis, not overwritten by the next save) and the
defaults apply; one that cannot be read (permissions, I/O error) is left as it
is. Either way the phone starts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from appliance.ui.panel import VOLUME_ROLES

__all__ = ["PanelSettings"]

logger = logging.getLogger(__name__)

_FORMAT = 1


class PanelSettings:
    """The settings file at ``path`` (``None``: nothing is kept).

    Methods do blocking file I/O; the controller calls them off the event loop.
    """

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None

    def load_volume(self) -> dict[str, int]:
        """Return the saved level per role; ``{}`` when none or unreadable.

        Roles this version does not know are skipped (a newer version may
        have written them); levels are clamped by the Panel.
        """
        if self.path is None:
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            # Permissions or an I/O error: the file may be fine; leave it.
            logger.warning("%s: cannot read (%s); defaults apply", self.path, exc)
            return {}
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            self._set_aside(f"not valid JSON ({exc})")
            return {}
        volume = raw.get("volume") if isinstance(raw, dict) else None
        if not isinstance(volume, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in volume.items()
        ):
            self._set_aside("no valid 'volume' table")
            return {}
        return {k: v for k, v in volume.items() if k in VOLUME_ROLES}

    def save_volume(self, volume: Mapping[str, int]) -> None:
        """Replace the file atomically with ``volume``.

        Raises:
            OSError: the directory is not writable or the disk is full (the
                previous file is left as it was).
        """
        if self.path is None:
            return
        data = json.dumps({"format": _FORMAT, "volume": dict(volume)}, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename itself is durable only once the directory is synced.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _set_aside(self, why: str) -> None:
        assert self.path is not None
        bad = self.path.with_name(self.path.name + ".bad")
        logger.warning("%s: %s; defaults apply, file kept as %s", self.path, why, bad)
        try:
            self.path.replace(bad)
        except OSError as exc:
            logger.warning("cannot move %s aside: %s", self.path, exc)
