"""Joins the call log, the clock and do-not-disturb to the front panel.

The composition root calls :func:`open_call_log` once the panel is open (or
without one: the log is kept all the same). This module is the adapter side of
:mod:`appliance.ui.calllog_view`: it reads the wall clock and the
clock-synchronised flag (:func:`~appliance.calllog.recorder.clock_synchronized`,
injectable), turns log entries into :class:`LogItem` values, and gives them to
the Panel through :meth:`PanelController.apply` as facts:

* the log and its count of unseen missed calls, whenever the log changes;
* the clock's text, at every minute boundary;
* the network bars, from the last call's quality score;
* the saved do-not-disturb switch, at start, and the directory and country as
  last edited on the web page (kept in the same state file).

Opening the log on the panel (:class:`MarkMissedSeen`) marks the missed calls
seen in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.calllog.recorder import CallLogRecorder, clock_synchronized, open_store
from appliance.phone.device import Device
from appliance.ui.calllog_view import (
    bars_for,
    format_clock,
    log_item,
    until_next_minute,
)
from appliance.ui.commands import Command, MarkMissedSeen
from appliance.ui.panel import Panel
from appliance.ui.settings import PanelSettings, UiConfig

if TYPE_CHECKING:
    # Not imported at run time: a phone without the panel's libraries keeps a
    # call log all the same.
    from appliance.ui.controller import PanelController

__all__ = ["DeskLink", "call_log_path", "open_call_log"]

logger = logging.getLogger(__name__)


async def open_call_log(
    ui: UiConfig,
    device: Device,
    controller: PanelController | None,
    stack: contextlib.AsyncExitStack,
    *,
    wall: Callable[[], float] = time.time,
    synced: Callable[[], bool] | None = None,
) -> CallLogRecorder:
    """Start the call log of ``device`` (and show it on ``controller``'s panel).

    :func:`call_log_path` names the database; one that cannot
    be opened leaves the log in memory, said in the journal. Everything
    started here stops with ``stack``.
    """
    if synced is None:
        flag = Path(ui.clock_sync_file) if ui.clock_sync_file else None
        synced = lambda: clock_synchronized(flag)  # noqa: E731
    store = None
    path = call_log_path(ui)
    if path is not None:
        store = await asyncio.to_thread(open_store, path, ui.call_log_max)
    recorder = CallLogRecorder(
        device, store, max_entries=ui.call_log_max, wall=wall, clock_known=synced
    )
    await stack.enter_async_context(recorder)
    if controller is not None:
        link = DeskLink(recorder, controller, wall=wall, synced=synced)
        settings = PanelSettings(ui.state_file or None)
        dnd = await asyncio.to_thread(settings.load_dnd)
        controller.apply(lambda panel, now: panel.set_dnd(dnd, now))
        edited = await asyncio.to_thread(settings.load_directory)
        if edited is not None:
            controller.apply(lambda panel, now: _restore(panel, edited))
        country = await asyncio.to_thread(settings.load_country)
        if country is not None:
            controller.apply(lambda panel, now: _restore_country(panel, country))
        await stack.enter_async_context(link)
    return recorder


def _restore(panel: Panel, edited: dict[str, str]) -> None:
    dropped = panel.restore_directory(edited)
    if dropped:
        logger.warning("saved directory: invalid entries dropped: %s", dropped)


def _restore_country(panel: Panel, country: str) -> None:
    problem = panel.restore_country(country)
    if problem is not None:
        logger.warning("saved country not used: %s", problem)


def call_log_path(ui: UiConfig) -> Path | None:
    """Where the call log is kept: ``ui.call_log_file``, else ``calls.db`` in
    the service's StateDirectory, else nowhere (None: memory only)."""
    if ui.call_log_file:
        return Path(ui.call_log_file)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "calls.db" if state else None


class DeskLink:
    """Feeds the panel from the recorder and the clock (``async with``)."""

    def __init__(
        self,
        recorder: CallLogRecorder,
        controller: PanelController,
        *,
        wall: Callable[[], float] = time.time,
        synced: Callable[[], bool] = clock_synchronized,
    ) -> None:
        self._recorder = recorder
        self._controller = controller
        self._wall = wall
        self._synced = synced
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeskLink:
        self._recorder.listeners.append(self.show_log)
        self._controller.command_listeners.append(self._on_command)
        self.show_log()
        self.show_clock()
        self._task = asyncio.get_running_loop().create_task(
            self._run_clock(), name="panel-clock"
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        with contextlib.suppress(ValueError):
            self._recorder.listeners.remove(self.show_log)
        with contextlib.suppress(ValueError):
            self._controller.command_listeners.remove(self._on_command)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _local(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds).astimezone()

    def show_log(self) -> None:
        """Give the panel the current log, missed count and network bars."""
        today = self._local(self._wall()) if self._synced() else None
        items = tuple(
            log_item(e, self._local(e.started), today) for e in self._recorder.entries()
        )
        unseen = self._recorder.unseen_missed()
        bars = bars_for(self._recorder.last_mos())

        def fact(panel: Panel, now: float) -> None:
            panel.call_log(items, unseen, now)
            panel.network_bars(bars, now)

        self._controller.apply(fact)

    def show_clock(self) -> None:
        """Give the panel the clock's text now."""
        text = format_clock(self._local(self._wall()) if self._synced() else None)
        self._controller.apply(lambda panel, now: panel.clock(*text, now))

    def _on_command(self, command: Command, _now: float) -> None:
        if isinstance(command, MarkMissedSeen):
            self._recorder.mark_missed_seen()

    async def _run_clock(self) -> None:
        while True:
            await asyncio.sleep(until_next_minute(self._wall()))
            self.show_clock()
