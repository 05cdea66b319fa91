"""Saving the panel's settings (volume levels, do-not-disturb) off the loop.

A run of Vol+/Vol- presses should be one write to the SD card, a write must
never block the event loop, and a press just before shutdown must still be
kept. That debounce-and-write dance is its own small adapter, kept apart from
:mod:`appliance.ui.controller`, which only says when something changed
(:meth:`SettingsSaver.changed`) and owns the task (:meth:`SettingsSaver.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from appliance.tasks import wait_event
from appliance.ui.settings import PanelSettings

__all__ = ["SETTINGS_SAVE_DELAY_S", "SettingsSaver"]

logger = logging.getLogger(__name__)

#: Volume levels are saved this long after the last press (a run of presses
#: is one write to the SD card).
SETTINGS_SAVE_DELAY_S = 1.0


class SettingsSaver:
    """Writes what ``levels``, ``dnd``, ``directory`` and ``country`` return
    to ``settings``, debounced.

    Args:
        settings: the settings file.
        levels: returns the current level of each role.
        dnd: returns whether do-not-disturb is on.
        directory: returns the edited directory (None: the configuration's).
        country: returns the chosen country (None: the configuration's).
    """

    def __init__(
        self,
        settings: PanelSettings,
        levels: Callable[[], dict[str, int]],
        dnd: Callable[[], bool],
        directory: Callable[[], dict[str, str] | None] = lambda: None,
        country: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._levels = levels
        self._dnd = dnd
        self._directory = directory
        self._country = country
        self._wanted = asyncio.Event()
        self._unsaved = False
        self._writing: asyncio.Future[None] | None = None

    def changed(self) -> None:
        """Something to save changed: write it after a quiet second."""
        self._unsaved = True
        self._wanted.set()

    async def run(self) -> None:
        """The saver task: wait for changes, write after the quiet second."""
        while True:
            await self._wanted.wait()
            # Wait for a quiet second: a run of presses is one write.
            while self._wanted.is_set():
                self._wanted.clear()
                await wait_event(self._wanted, SETTINGS_SAVE_DELAY_S)
            await self._save()

    async def flush(self) -> None:
        """After the task stopped: finish a write and save what is unsaved."""
        await self._finish_write()
        if self._unsaved:  # a press just before shutdown is kept
            await self._save()

    async def _save(self) -> None:
        """Write the levels now; one write at a time, the newest last."""
        await self._finish_write()  # a write cut off by cancel() still runs
        levels = self._levels()
        self._unsaved = False
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(
                functools.partial(
                    self._settings.save_volume,
                    levels,
                    dnd=self._dnd(),
                    directory=self._directory(),
                    country=self._country(),
                )
            )
        )
        # Shielded: cancelling the saver (shutdown) must not leave a write
        # running unseen that could land after the final one.
        with contextlib.suppress(OSError):  # reported by _finish_write
            await asyncio.shield(self._writing)
        await self._finish_write()

    async def _finish_write(self) -> None:
        writing, self._writing = self._writing, None
        if writing is None:
            return
        try:
            await writing
        except OSError as exc:
            # Read-only or full SD card: the volume still works until reboot,
            # and the next press (or shutdown) tries again.
            self._unsaved = True
            logger.warning("volume not saved to %s: %s", self._settings.path, exc)
