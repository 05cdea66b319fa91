"""The updater inside the phone service: the phone's facts in, the screen out.

The composition root builds a :class:`PhoneUpdater` from ``[update]`` when a
repository is configured, and hands it the parts it listens to:

* the Device's typed facts (``CallsChanged``): ringing, placing or in a
  call is *busy*; the machine installs and switches only when not busy;
* the front panel's keys and buttons: no key for ``idle_after_s``;
* the health facts of a release on trial: ``ready`` (the service told
  systemd READY), ``registered`` (the Device's ``ready``) and ``audio``
  (Device.audio opened its input and speaker devices). A failed audio check
  is reported at once, so a release that cannot open the sound card is
  rolled back without waiting for the deadline.

It shows each step on the front panel (download percent, installing,
restarting, rolled back with the reason) through a callable, so the update
package knows nothing of the panel. The restart is a callable too: in the
service it stops the service with :data:`RESTART_EXIT_STATUS`, and systemd
starts the unit again from the release ``current`` names (the unit's
``Restart=always``; docs/updates.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.errors import AudioDeviceError, ConfigError
from appliance.phone.device import Device
from appliance.phone.ports import CallsChanged, EngineEvent
from appliance.update.artifact import host_platform
from appliance.update.boot import BOOT_MARK
from appliance.update.machine import Phase
from appliance.update.releases import Releases
from appliance.update.service import StateFile, Updater
from appliance.update.settings import UpdateConfig
from appliance.update.source import ReleaseSource

__all__ = ["RESTART_EXIT_STATUS", "Banner", "PhoneUpdater", "banner"]

logger = logging.getLogger(__name__)

#: The service's exit status when it restarts into another release (EX_TEMPFAIL:
#: not 2, which stops the unit; not 0, so that the journal tells it from a
#: clean end, and so that a unit with ``Restart=on-failure`` restarts it too).
RESTART_EXIT_STATUS = 75

#: What the panel shows: status, version, download fraction, reason.
Banner = tuple[str, str, float | None, str]
Show = Callable[[str, str, float | None, str], None]

#: How often the download percent is redrawn.
PROGRESS_PERIOD_S = 0.5


def banner(status: dict[str, Any], *, dismissed: bool = False) -> Banner | None:
    """What the panel shows for the updater's :meth:`~Updater.status`, if anything.

    Waiting for the phone to be idle shows nothing (the phone is in use);
    ``rolled-back`` shows its reason until someone presses a key
    (``dismissed``). A release on trial that passed its checks and is only
    waiting to have stayed up shows nothing either (the phone works).
    """
    phase = Phase(status["phase"])
    version = str(status["candidate"])
    reason = str(status["reason"])
    if phase is Phase.DOWNLOADING:
        return ("Downloading", version, float(status["progress"]), "")
    if phase is Phase.INSTALLING:
        return ("Installing", version, None, "")
    if phase in (Phase.SWITCHING, Phase.RESTARTING):
        return ("Restarting", version, None, "")
    if phase is Phase.HEALTH_CHECK and not status.get("staying_up"):
        return ("Starting", version, None, "")
    if phase is Phase.ROLLING_BACK:
        return ("Rolling back", "", None, reason)
    if phase is Phase.ROLLED_BACK and not dismissed:
        return ("Rolled back", "", None, reason)
    return None


class PhoneUpdater:
    """:class:`Updater` fed by the phone (see the module docstring).

    Args:
        config: ``[update]`` (with a ``url``).
        restart: stops the service for systemd to start it again; awaited,
            need not return.
        show: draws a :data:`Banner` on the panel ("" status hides it).
        clock: monotonic seconds.

    Raises:
        ConfigError: the trust anchor cannot be read.
    """

    def __init__(
        self,
        config: UpdateConfig,
        *,
        restart: Callable[[], Awaitable[None]],
        show: Show | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            trust_root = Path(config.trust_root).read_bytes()
        except OSError as exc:
            raise ConfigError(
                "update.trust_root", f"cannot read {config.trust_root}: {exc.strerror}"
            ) from exc
        state_dir = config.state_dir
        releases = Releases(Path(config.root))
        self.updater = Updater(
            policy=config.machine_policy(),
            source=ReleaseSource(
                url=config.url,
                trust_root=trust_root,
                state_dir=state_dir / "tuf",
                download_dir=state_dir / "downloads",
                platform=config.platform or host_platform(),
            ),
            releases=releases,
            state_file=StateFile(state_dir / "state.json"),
            running=releases.current,
            restart=restart,
            clock=clock,
            boot_mark=state_dir / BOOT_MARK,
        )
        self.show = show
        self._stack = contextlib.ExitStack()
        self._dismissed = False
        self._shown: Banner | None = None

    # ---- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        """Take the updater's lock and resume; call before the Device registers.

        Raises:
            UpdateError: another updater (``appliance update``) holds the lock.
        """
        self._stack.enter_context(self.updater.state_file.lock())
        self.updater.start()
        state = self.updater.machine.state
        logger.info(
            "update: %s, current -> %s, running %s%s",
            state.phase,
            self.updater.running or "-",
            __version__,
            f" ({state.reason})" if state.reason else "",
        )

    def close(self) -> None:
        """Release the lock."""
        self._stack.close()

    def attach(self, device: Device) -> Callable[[], None]:
        """Listen to ``device``'s facts; returns the function that stops it."""
        unsubscribe = device.subscribe(self._on_engine_event)

        def registered(_device: Device) -> None:
            self.health("registered")

        device.on("ready", registered)
        if device.status() in ("ready", "busy"):
            self.health("registered")

        def detach() -> None:
            unsubscribe()
            device.off("ready", registered)

        return detach

    async def run(self) -> None:
        """Carry out the updater's work and keep the panel current (a task)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.updater.serve())
            group.create_task(self._keep_shown())

    # ---- facts ------------------------------------------------------------------

    def _on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, CallsChanged):
            self.updater.phone_busy(event.calls > 0)

    def key_pressed(self) -> None:
        """A key or button of the front panel was used."""
        self.updater.key_pressed()
        if not self._dismissed and self._phase() is Phase.ROLLED_BACK:
            self._dismissed = True
            self._draw()

    def health(self, fact: str) -> None:
        """``ready``, ``registered`` or ``audio``: logged while on trial."""
        if self._phase() is Phase.HEALTH_CHECK:
            logger.info("update: health fact %s", fact)
        self.updater.health(fact)

    def health_failed(self, reason: str) -> None:
        """A health check failed before its deadline (e.g. no audio device)."""
        self.updater.health_failed(reason)

    def service_ready(self, open_audio: Callable[[], object]) -> None:
        """The service is up: ``ready``, then ``audio`` if ``open_audio``
        opens the call's devices (a failure is this release's fault)."""
        self.health("ready")
        try:
            open_audio()
        except AudioDeviceError as exc:
            logger.error("cannot open the audio devices: %s", exc)
            self.health_failed(f"cannot open audio: {exc.message}")
            return
        self.health("audio")

    # ---- the screen ------------------------------------------------------------

    def _phase(self) -> Phase:
        return self.updater.machine.state.phase

    def _draw(self) -> None:
        if self._phase() is not Phase.ROLLED_BACK:
            self._dismissed = False  # the next rollback is shown again
        shown = banner(self.updater.status(), dismissed=self._dismissed)
        if shown == self._shown or self.show is None:
            return
        self._shown = shown
        self.show(*(shown or ("", "", None, "")))

    async def _keep_shown(self) -> None:
        changed = self.updater.changed
        while True:
            changed.clear()
            self._draw()
            # Download progress arrives from a thread without an event.
            period = PROGRESS_PERIOD_S if self._phase() is Phase.DOWNLOADING else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), period)
