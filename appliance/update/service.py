"""The updater on the phone: the pure machine driven on asyncio.

:class:`Updater` owns an :class:`~appliance.update.machine.UpdateMachine`, the
:class:`~appliance.update.source.ReleaseSource` (TUF over HTTP) and the
:class:`~appliance.update.releases.Releases` on disk. After every input it
writes the machine's state to ``state.json`` (write, fsync, rename) *before*
it carries out the actions the input queued: a crash or power cut between
the two is what :meth:`UpdateMachine.resume` is built for.

Blocking work (TUF's HTTP, unpacking, pip) runs in threads, so a call in
progress keeps its event loop; installing and switching start only when the
machine says the phone is idle. The phone's facts come in through
:meth:`Updater.phone_busy`, :meth:`Updater.key_pressed` and
:meth:`Updater.health`; the restart is a callable handed in by the
composition root (exit for systemd to restart the unit, in the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, SignatureError, UpdateError
from appliance.files import write_atomic
from appliance.update.machine import (
    Action,
    ActionKind,
    Phase,
    UpdateMachine,
    UpdateState,
)
from appliance.update.policy import UpdatePolicy
from appliance.update.releases import Releases
from appliance.update.source import Release, ReleaseSource

__all__ = ["StateFile", "Updater", "local_minute"]

logger = logging.getLogger(__name__)


_FAILABLE = (Phase.CHECKING, Phase.DOWNLOADING, Phase.INSTALLING, Phase.SWITCHING)


def local_minute() -> int:
    """Minutes since local midnight (for the install window)."""
    now = time.localtime()
    return now.tm_hour * 60 + now.tm_min


class StateFile:
    """The machine's persisted state: one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> UpdateState:
        """The last state written, or a fresh one."""
        try:
            return UpdateState.from_dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return UpdateState()
        except (ValueError, TypeError) as exc:  # a torn write cannot happen; bit rot
            logger.warning("update state unreadable (%s): starting afresh", exc)
            return UpdateState()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the updater's lock: one updater (service or command) at a time.

        Raises:
            UpdateError: another process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name("lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateError("another updater is running") from None
            yield

    def save(self, state: UpdateState) -> None:
        """Write ``state`` durably (fsync the file and its directory)."""
        data = json.dumps(state.to_dict(), indent=2, sort_keys=True).encode()
        write_atomic(self.path, data)


class Updater:
    """Checks, downloads, installs and switches releases, as the machine says.

    Args:
        policy: the ``[update]`` policy.
        source: where releases come from (TUF).
        releases: the release directories.
        state_file: where the machine's state persists.
        running: the version of the code running now.
        restart: restarts the service (awaited; in the service it does not
            return).
        clock: monotonic seconds; minute: local minute of the day.
        boot_mark: the boot check's mark (:mod:`appliance.update.boot`);
            when it exists, this start was counted already.
    """

    def __init__(
        self,
        *,
        policy: UpdatePolicy,
        source: ReleaseSource,
        releases: Releases,
        state_file: StateFile,
        running: str,
        restart: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        minute: Callable[[], int] = local_minute,
        boot_mark: Path | None = None,
    ) -> None:
        self.source = source
        self.releases = releases
        self.state_file = state_file
        self.running = running
        self._restart = restart
        self._clock = clock
        self._minute = minute
        self._boot_mark = boot_mark
        self.machine = UpdateMachine(policy, state_file.load())
        self.machine.adopt(running)
        self._release: Release | None = None
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()  # set on every change, for the screen
        self._watchers: set[asyncio.Event] = set()

    # --------------------------------------------------------------- inputs

    def start(self) -> None:
        """Resume after a (re)start; queue what must happen next."""
        mark = self._boot_mark
        if mark is not None and mark.exists():
            self.machine.attach(self._clock(), self.running)
            mark.unlink()
        else:
            self.machine.resume(self._clock(), self.running)
        self._commit_state()

    def check_now(self) -> None:
        """Check for a release now (``appliance update check``)."""
        self.machine.check_requested(self._clock())
        self._commit_state()

    def install_now(self) -> None:
        """Install the newest release once the phone is idle."""
        self.machine.install_requested(self._clock())
        self.machine.tick(self._clock(), self._minute())  # one already verified
        self._commit_state()

    def rollback(self, reason: str) -> None:
        """Go back to the previous release."""
        self.machine.rollback_requested(reason)
        self._commit_state()

    def request(self, step: str) -> None:
        """``appliance update check|install|rollback``: ask for ``step`` now.

        Raises:
            UpdateError: the phase does not allow ``step`` (an update under
                way finishes first).
            InvalidStateError: a rollback with no previous release.
        """
        phase = self.machine.state.phase
        resting = phase in (Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK)
        allowed = {
            "check": resting,
            "install": resting or phase in (Phase.VERIFIED, Phase.INSTALLED),
            "rollback": resting or phase is Phase.HEALTH_CHECK,
        }
        if not allowed[step]:
            raise UpdateError(f"cannot {step} while {phase}")
        if step == "check":
            self.check_now()
        elif step == "install":
            self.install_now()
        else:
            self.rollback("rolled back by hand")

    def phone_busy(self, busy: bool) -> None:
        """Ringing or in a call (True), or neither (False)."""
        self.machine.phone_busy(busy)
        self._wake.set()

    def key_pressed(self) -> None:
        """A key or the hook was used."""
        self.machine.key_pressed(self._clock())

    def health(self, fact: str) -> None:
        """``ready``, ``registered`` or ``audio`` (the release on trial)."""
        staying_up = self.machine.staying_up
        self.machine.health(self._clock(), fact)
        if self.machine.staying_up and not staying_up:
            logger.info(
                "update: %s healthy; committed if it stays up %.0f s",
                self.machine.state.candidate,
                self.machine.policy.stay_up_s,
            )
        self._commit_state()

    def health_failed(self, reason: str) -> None:
        """The release on trial failed a check before the deadline."""
        self.machine.health_failed(reason)
        self._commit_state()

    def status(self) -> dict[str, Any]:
        """The state and download progress, for the screen and the CLI."""
        machine = self.machine
        return {
            **machine.state.to_dict(),
            "progress": machine.progress,
            "staying_up": machine.staying_up,
        }

    # ----------------------------------------------------------------- loop

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Event]:
        """An event of one's own, set at every change (``changed`` is the
        screen's, which clears it)."""
        event = asyncio.Event()
        self._watchers.add(event)
        try:
            yield event
        finally:
            self._watchers.discard(event)

    def _commit_state(self) -> None:
        self.state_file.save(self.machine.state)
        self._wake.set()
        self.changed.set()
        for event in self._watchers:
            event.set()

    async def run(self) -> None:
        """Resume, then carry out actions and ticks until cancelled (holds the
        lock)."""
        with self.state_file.lock():
            self.start()
            await self.serve()

    async def serve(self) -> None:
        """:meth:`run` for a caller that holds the lock and called :meth:`start`."""
        while True:
            await self.run_once()
            deadline = self.machine.next_deadline()
            timeout = None if deadline is None else max(deadline - self._clock(), 0)
            self._wake.clear()  # no await since the last action: nothing lost
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self.machine.tick(self._clock(), self._minute())
            self._commit_state()

    async def run_once(self) -> None:
        """Carry out the queued actions, and those they queue, then return."""
        while actions := self.machine.actions():
            for action in actions:
                await self._do(action)

    async def _do(self, action: Action) -> None:
        logger.info("update: %s %s", action.kind, action.version)
        kind = action.kind
        try:
            if kind is ActionKind.CHECK:
                self._release = await asyncio.to_thread(self.source.latest)
                self.machine.check_done(
                    self._release.version if self._release else None
                )
            elif kind is ActionKind.DOWNLOAD:
                release = self._release
                if release is None or release.version != action.version:
                    release = await asyncio.to_thread(self.source.latest)
                if release is None or release.version != action.version:
                    raise UpdateError(f"release {action.version} no longer offered")
                await asyncio.to_thread(self.source.download, release, self._progress)
                self.machine.downloaded(self._clock(), self._minute())
            elif kind is ActionKind.INSTALL:
                artifact = self.source.artifact_path(action.version)
                await asyncio.to_thread(self.releases.install, artifact, action.version)
                self.machine.installed(self._clock(), self._minute())
            elif kind is ActionKind.SWITCH:
                await asyncio.to_thread(self.releases.switch, action.version)
                self.machine.switched()
            elif kind is ActionKind.SWITCH_BACK:
                await asyncio.to_thread(self.releases.switch_back, action.version)
            elif kind is ActionKind.LINK_PREVIOUS:
                await asyncio.to_thread(self.releases.link_previous, action.version)
            elif kind is ActionKind.COMMIT:
                await asyncio.to_thread(self.releases.prune)
                logger.info("update: %s committed", action.version)
            elif kind is ActionKind.RESTART:
                self._commit_state()
                await self._restart()
                return
        except SignatureError as exc:
            logger.error("update refused: %s", exc)
            self.machine.failed(f"refused: {exc}")
        except (ApplianceError, OSError) as exc:
            if self.machine.state.phase not in _FAILABLE:
                raise  # a failed switch back: the supervisor logs it
            logger.warning("update failed: %s", exc)
            self.machine.failed(str(exc))
        self._commit_state()

    def _progress(self, received: int, total: int) -> None:
        # Called from the download thread: a float store is atomic enough for
        # a progress bar, and the screen polls it.
        self.machine.download_progress(received / total if total else 0.0)
