"""Custom sounds from the ``sounds`` option: fetched once, cached, decoded.

A location is a local path (``/srv/ring.wav``, ``file:///srv/ring.wav``) or an
``http(s)://`` URL. URLs are downloaded once, in a worker thread with a
timeout, into ``cache_dir`` (named by the SHA-256 of the URL), and read from
there on later starts, so a phone that boots without network still rings with
the sound it fetched before. Decoding (WAV, MP3, Ogg: whatever PyAV reads) and
the seed's duration limits are in :mod:`appliance.audio.sounds`.

Every failure raises :class:`SoundLoadError` with a message naming the sound
and the location; the caller logs it and keeps the generated default.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from appliance.audio.sounds import Sound, custom_sound, decode_audio
from appliance.errors import TwilioError

__all__ = ["MAX_BYTES", "SoundLoadError", "SoundLoader", "default_cache_dir"]

logger = logging.getLogger(__name__)

#: Largest sound file accepted (a 3 s WAV is 0.5 MB; a looping ring may be longer).
MAX_BYTES = 16 * 1024 * 1024


class SoundLoadError(TwilioError):
    """A custom sound could not be fetched or decoded (the default plays)."""

    default_code = 31000


def default_cache_dir() -> Path:
    """``$APPLIANCE_SOUND_CACHE``, else ``$XDG_CACHE_HOME/appliance/sounds``."""
    explicit = os.environ.get("APPLIANCE_SOUND_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "appliance" / "sounds"


class SoundLoader:
    """Fetches and decodes custom sounds.

    Args:
        cache_dir: where downloaded files are kept.
        timeout_s: limit for one download.
    """

    def __init__(self, cache_dir: Path | None = None, timeout_s: float = 10.0) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.timeout_s = timeout_s

    async def load(self, name: str, location: str) -> Sound:
        """Fetch (or read from the cache) and decode sound ``name``.

        Raises:
            SoundLoadError: unreadable file, failed download, not audio.
        """
        try:
            data = await asyncio.wait_for(
                asyncio.to_thread(self._read, location), self.timeout_s + 1.0
            )
        except TimeoutError:
            raise self._error(name, location, "download timed out") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError is an OSError; IncompleteRead (a chunked download cut
            # short) is an HTTPException.
            raise self._error(name, location, str(exc) or type(exc).__name__) from None
        try:
            samples = await asyncio.to_thread(decode_audio, data)
        except ValueError as exc:
            raise self._error(name, location, str(exc)) from None
        return custom_sound(name, samples)

    @staticmethod
    def _error(name: str, location: str, reason: str) -> SoundLoadError:
        return SoundLoadError(
            message=f"custom sound {name!r} from {location!r} unusable: {reason}; "
            "playing the default"
        )

    def cache_path(self, url: str) -> Path:
        """Where a downloaded ``url`` is cached."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:32]
        suffix = Path(urllib.parse.urlsplit(url).path).suffix[:8]
        return self.cache_dir / f"{digest}{suffix}"

    def _read(self, location: str) -> bytes:
        """Blocking: the file's bytes (worker thread)."""
        scheme = urllib.parse.urlsplit(location).scheme.lower()
        if scheme in ("http", "https"):
            return self._download(location)
        if scheme == "file":
            path = Path(
                urllib.request.url2pathname(urllib.parse.urlsplit(location).path)
            )
        elif scheme and len(scheme) > 1:
            raise ValueError(f"unsupported scheme {scheme!r} (use a path or http(s))")
        else:
            path = Path(location)
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        return path.read_bytes()

    def _download(self, url: str) -> bytes:
        cached = self.cache_path(url)
        if cached.is_file():
            return cached.read_bytes()
        logger.info("fetching sound %s", url)
        request = urllib.request.Request(url, headers={"User-Agent": "appliance"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            data: bytes = response.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        # http.client returns what arrived when the server closes early; a
        # cut-off WAV still decodes, and would be cached as the ring for good.
        if declared is not None and declared.isdigit() and len(data) != int(declared):
            raise ValueError(f"download cut short ({len(data)} of {declared} bytes)")
        # Decode before caching: a bad download must not stick in the cache.
        decode_audio(data)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(cached.suffix + ".part")
        partial.write_bytes(data)
        partial.replace(cached)  # atomic: a crash never leaves half a file
        return data
