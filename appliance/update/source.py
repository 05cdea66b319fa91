"""Where releases come from: a TUF repository over HTTP, read through ngclient.

Everything the phone trusts about a release is decided by python-tuf's
``Updater``: the chain of roots from the one built into the image, the
timestamp's expiry (freeze), snapshot and targets versions (rollback,
mix-and-match), thresholds of signatures, and the length and hashes of the
artifact. This module only chooses which target to ask for (the platform's
channel pointer, itself a signed target), enforces our own limits first (the
artifact's size, free disk space) and streams the download into the release
disk rather than into ``/tmp`` (a RAM disk on the image).

Resumable: an artifact download that is cut (network, power, kill -9) keeps
what arrived in ``downloads/.spool/resume-<hash of the URL>``, and the next
attempt asks only for the rest (an HTTP ``Range`` request; a server that
ignores it sends the whole file again, which is fine). Consistent snapshots
put the artifact's hash in its URL, so a partial file can only continue the
same content. The joined file is verified by TUF like any other; a file
TUF refuses is deleted, so a bad partial never sticks.

Anti-rollback state is TUF's trusted metadata directory
(``var/lib/appliance/update/tuf`` under the root): the newest root,
timestamp, snapshot and targets the phone has accepted. It lives on the
persistent disk, so a reboot does not reopen the door to old metadata.

Blocking code (sockets, disk); the asyncio service runs it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from appliance.errors import SignatureError, UpdateError
from appliance.update.machine import parse_version

__all__ = ["Progress", "Release", "ReleaseSource", "StreamingFetcher"]

logger = logging.getLogger(__name__)

#: Called with (bytes received, bytes expected) while an artifact downloads.
Progress = Callable[[int, int], None]

#: Bytes read at a time into a resumable download: a cut loses less than this.
RESUME_CHUNK = 64 * 1024

#: Largest channel pointer accepted (it is a few hundred bytes).
POINTER_MAX_BYTES = 4096


class StreamingFetcher(Urllib3Fetcher):
    """ngclient's urllib3 fetcher, writing into ``spool_dir`` with progress.

    The length limit is the one ngclient passes in (the length signed in
    the metadata, or its configured maximum for metadata), enforced as the
    bytes arrive: an endless response stops at the limit.
    """

    def __init__(self, spool_dir: Path, socket_timeout: int = 30) -> None:
        super().__init__(socket_timeout=socket_timeout, app_user_agent="appliance")
        self.spool_dir = spool_dir
        self.progress: Progress | None = None
        #: Set while an artifact downloads: ``max_length`` is then its exact
        #: signed length, and a cut download is kept to be resumed.
        self.resumable = False
        self._pool = urllib3.PoolManager(headers={"User-Agent": "appliance"})

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """Download ``url`` into a spool file; at most ``max_length`` bytes."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if self.resumable:
            with self._resumed(url, max_length) as spool:
                yield spool
            return
        received = 0
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            for chunk in self.fetch(url):
                received += len(chunk)
                if received > max_length:
                    raise tuf_errors.DownloadLengthMismatchError(
                        f"{url}: more than the {max_length} bytes expected"
                    )
                spool.write(chunk)
                if self.progress is not None:
                    self.progress(received, max_length)
            spool.seek(0)
            yield spool

    @contextlib.contextmanager
    def _resumed(self, url: str, length: int) -> Iterator[IO[bytes]]:
        name = hashlib.sha256(url.encode()).hexdigest()[:24]
        partial = self.spool_dir / f"resume-{name}"
        with open(partial, "a+b") as spool:
            try:
                self._fill(url, spool, length)
            except tuf_errors.DownloadError:
                if not spool.seek(0, os.SEEK_END):  # nothing worth keeping
                    partial.unlink(missing_ok=True)
                raise  # else kept: the next attempt goes on from here
            except Exception as exc:
                raise tuf_errors.DownloadError(f"Failed to download {url}") from exc
            spool.seek(0)
            try:
                yield spool  # TUF verifies it, then copies it out
            finally:
                partial.unlink(missing_ok=True)  # done, or refused: never resumed

    def _fill(self, url: str, spool: IO[bytes], length: int) -> None:
        """Append the rest of ``url`` to ``spool``, to ``length`` bytes exactly."""
        have = spool.seek(0, os.SEEK_END)
        if have >= length:  # complete already, or too long: fetch it all
            spool.truncate(0)
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = self._pool.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(self.socket_timeout),
            )
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tuf_errors.SlowRetrievalError from exc
            raise
        try:
            if response.status >= 400:
                raise tuf_errors.DownloadHTTPError(
                    f"HTTP error occurred with status {response.status}",
                    response.status,
                )
            resumed = response.status == 206
            if resumed and not str(
                response.headers.get("Content-Range", "")
            ).startswith(f"bytes {have}-"):
                spool.truncate(0)
                raise tuf_errors.DownloadError(f"{url}: answered another range")
            if not resumed:  # the whole file: start again
                spool.truncate(0)
                have = 0
            else:
                logger.info("update: resuming %s at byte %d", url, have)
            received = have
            for chunk in response.stream(RESUME_CHUNK):
                received += len(chunk)
                if received > length:
                    spool.truncate(0)
                    raise tuf_errors.DownloadLengthMismatchError(
                        f"{url}: more than the {length} bytes expected"
                    )
                spool.write(chunk)
                if self.progress is not None:
                    self.progress(received, length)
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError from exc
        finally:
            spool.flush()
            response.release_conn()
        if received < length:
            raise tuf_errors.DownloadError(
                f"{url}: cut after {received} of {length} bytes (kept to resume)"
            )


@dataclass(frozen=True)
class Release:
    """A release the repository offers, as TUF's metadata describes it."""

    version: str
    info: TargetFile

    @property
    def length(self) -> int:
        """Bytes to download."""
        return self.info.length


class ReleaseSource:
    """Check for and download releases of one platform from one repository.

    Args:
        url: base URL of the repository (``metadata/`` and ``targets/`` below).
        trust_root: the root metadata built into the image (bytes).
        state_dir: persistent directory for TUF's trusted metadata.
        download_dir: where artifacts are spooled and kept until installed.
        platform: wheel platform tag; falls back to ``any``.
        max_bytes: largest artifact accepted, whatever the metadata says.
        reserve_bytes: free space that must remain after download and unpack.
    """

    def __init__(
        self,
        *,
        url: str,
        trust_root: bytes,
        state_dir: Path,
        download_dir: Path,
        platform: str,
        max_bytes: int = 512 * 1024 * 1024,
        reserve_bytes: int = 64 * 1024 * 1024,
        socket_timeout: int = 30,
    ) -> None:
        self.url = url.rstrip("/")
        self.trust_root = trust_root
        self.state_dir = state_dir
        self.download_dir = download_dir
        self.platform = platform
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._fetcher = StreamingFetcher(download_dir / ".spool", socket_timeout)

    def _updater(self) -> Updater:
        # One Updater per check: ngclient refreshes top-level metadata once
        # per instance (TUF §5: the client workflow runs from the start).
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(self.state_dir),
            metadata_base_url=f"{self.url}/metadata/",
            target_dir=str(self.download_dir),
            target_base_url=f"{self.url}/targets/",
            fetcher=self._fetcher,
            config=UpdaterConfig(max_root_rotations=32),
            bootstrap=self.trust_root,
        )

    def latest(self) -> Release | None:
        """The newest release for this platform, verified by TUF; no download.

        Raises:
            SignatureError: the repository failed TUF's checks (never retried).
            UpdateError: the repository could not be reached or is malformed.
        """
        with _translated():
            updater = self._updater()
            updater.refresh()
            for platform in dict.fromkeys((self.platform, "any")):
                pointer_info = updater.get_targetinfo(
                    f"channels/{platform}/latest.json"
                )
                if pointer_info is not None:
                    break
            else:
                return None
            if pointer_info.length > POINTER_MAX_BYTES:
                raise UpdateError("channel pointer too large")
            path = updater.download_target(
                pointer_info,
                str(self.download_dir / f"latest-{platform}.json"),
            )
            pointer = json.loads(Path(path).read_text())
            version = str(pointer["version"])
            parse_version(version)
            info = updater.get_targetinfo(str(pointer["target"]))
            if info is None or not isinstance(info.custom, dict):
                raise UpdateError(f"release {version} is not in the repository")
            if info.custom.get("version") != version:
                raise SignatureError(
                    f"channel says {version}, target says {info.custom.get('version')}"
                )
            return Release(version, info)

    def artifact_path(self, version: str) -> Path:
        """Where the verified artifact of release ``version`` is kept."""
        return self.download_dir / f"appliance-{version}.tar.gz"

    def download(self, release: Release, progress: Progress | None = None) -> Path:
        """Download and verify ``release``'s artifact (or find it verified).

        Checks the size limit and free space before a byte is fetched.
        """
        if release.length > self.max_bytes:
            raise UpdateError(
                f"release {release.version} is {release.length} bytes, "
                f"over the limit of {self.max_bytes}"
            )
        dest = self.artifact_path(release.version)
        with _translated():
            updater = self._updater()
            updater.refresh()
            cached = updater.find_cached_target(release.info, str(dest))
            if cached is not None:
                return Path(cached)
            # spool + final copy + unpacked wheels + installed tree
            needed = 4 * release.length + self.reserve_bytes
            free = shutil.disk_usage(self.download_dir).free
            if free < needed:
                raise UpdateError(
                    f"not enough disk space: {free} bytes free, {needed} needed"
                )
            self._fetcher.progress = progress
            self._fetcher.resumable = True
            try:
                partial = dest.with_suffix(".partial")
                updater.download_target(release.info, str(partial))
                partial.replace(dest)
                for stale in self._fetcher.spool_dir.glob("resume-*"):
                    stale.unlink(missing_ok=True)  # cut downloads of older releases
            finally:
                self._fetcher.progress = None
                self._fetcher.resumable = False
        return dest


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """TUF's exceptions as ours: RepositoryError means someone is lying."""
    try:
        yield
    except tuf_errors.RepositoryError as exc:
        raise SignatureError(f"{type(exc).__name__}: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        raise UpdateError(f"download failed: {type(exc).__name__}: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise UpdateError(f"update failed: {exc}") from exc
