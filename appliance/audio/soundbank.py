"""The sounds Device.audio plays: custom ones from the ``sounds`` option, else defaults.

Custom sounds are fetched once per location when the Device is set up (in
tasks, so ``setup()`` does not wait for a download) and kept while their
location stays the same: ``setup()`` with a new file for ``incoming`` rings
with the new file. A sound that fails to load is reported on the Device's
``error`` event and the generated default plays instead
(:mod:`appliance.audio.sounds`).

Generated defaults are made once per (name, country, pair set) and kept: the
ring alone is 6 s of audio, 60-150 ms of numpy on an x86 core and several
times that on a Pi, which on the event loop at every incoming call stalled
the LED cadence and the audio mixers of a busy phone. The ring is made in a
worker thread when the Device is set up, so the first call finds it ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from appliance.audio.collection import AudioOptions
from appliance.audio.loader import SoundLoader, SoundLoadError
from appliance.audio.sounds import MAX_DURATION_S, Sound, default_sound
from appliance.cadence import tones_for
from appliance.errors import TwilioError
from appliance.tasks import TaskSet

__all__ = ["SoundBank"]

logger = logging.getLogger(__name__)


class SoundBank:
    """Custom and default sounds (see the module docstring).

    Args:
        loader: fetches custom sounds.
        options: the Device's options in force (``sounds``, ``fake_local_dtmf``).
        report_error: emits a load failure on the Device.
    """

    def __init__(
        self,
        loader: SoundLoader,
        options: Callable[[], AudioOptions],
        report_error: Callable[[TwilioError], None],
    ) -> None:
        self.loader = loader
        self._options = options
        self._report_error = report_error
        self._country = "US"
        self._custom: dict[str, Sound] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._loaded: Mapping[str, str] | None = None
        self._defaults: dict[tuple[str, str, bool], Sound] = {}
        self._tasks = TaskSet(logger, "sound")

    @property
    def country(self) -> str:
        """Country of the generated ring (appliance.cadence; default US)."""
        return self._country

    @country.setter
    def country(self, value: str) -> None:
        self._country = tones_for(value).country  # validates

    def load_custom(self) -> None:
        """Start loading the custom sounds of the ``sounds`` option that changed.

        Also makes the default ring in a worker thread if it is not made yet.
        """
        if self._key("incoming") not in self._defaults:
            self._tasks.spawn(self._prepare("incoming"), "sound-prepare")
        sounds = self._options().sounds or {}
        if sounds == self._loaded:
            return
        previous = self._loaded or {}
        self._loaded = sounds
        # Keep a sound only while its location is the same.
        self._custom = {
            n: s for n, s in self._custom.items() if sounds.get(n) == previous.get(n)
        }
        for name in [n for n in self._loading if sounds.get(n) != previous.get(n)]:
            self._loading.pop(name).cancel()  # still owned by the TaskSet
        for name, location in sounds.items():
            if name not in self._custom and name not in self._loading:
                self._loading[name] = self._tasks.spawn(
                    self._load_one(name, location), f"sound-{name}"
                )

    async def _load_one(self, name: str, location: str) -> None:
        try:
            self._custom[name] = await self.loader.load(name, location)
            logger.info("custom sound %s loaded from %s", name, location)
        except SoundLoadError as exc:
            logger.error("%s", exc.message)
            self._report_error(exc)
        finally:
            if self._loading.get(name) is asyncio.current_task():
                del self._loading[name]

    async def sound(self, name: str) -> Sound:
        """The sound to play for ``name``: custom if loaded, else the default.

        Waits for a custom sound still being fetched (bounded by the loader's
        timeout).

        Raises:
            KeyError: unknown name.
        """
        if name not in MAX_DURATION_S:
            raise KeyError(f"unknown sound {name!r}")
        pending = self._loading.get(name)
        if pending is not None:
            await asyncio.wait({pending})
        return self.ready_sound(name)

    def ready_sound(self, name: str) -> Sound:
        """The sound for ``name`` now: custom if loaded, else the default."""
        custom = self._custom.get(name)
        if custom is not None:
            return custom
        return self.default(name)

    def default(self, name: str) -> Sound:
        """The generated default for ``name`` in this country (made once)."""
        key = self._key(name)
        sound = self._defaults.get(key)
        if sound is None:
            sound = self._keep(
                key, default_sound(name, country=key[1], fake_dtmf=key[2])
            )
        return sound

    def _keep(self, key: tuple[str, str, bool], sound: Sound) -> Sound:
        sound.samples.setflags(write=False)  # shared by every playback from now on
        return self._defaults.setdefault(key, sound)

    def _key(self, name: str) -> tuple[str, str, bool]:
        return (name, self._country, self._options().fake_local_dtmf)

    async def _prepare(self, name: str) -> None:
        key = self._key(name)
        sound = await asyncio.to_thread(
            default_sound, name, country=key[1], fake_dtmf=key[2]
        )
        self._keep(key, sound)

    async def close(self) -> None:
        """Stop every load (Device.destroy); loading may start again."""
        self._loading.clear()
        await self._tasks.close()
