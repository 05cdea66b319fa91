"""The phone service's long-lived tasks and the token file they watch.

:func:`appliance.app.run_service` wires the service together; the tasks it
runs until SIGTERM (the token-file watch, the systemd watchdog ping, the
provisioning client, the control socket) and the small pieces of its
start-up and shutdown (the token source, the incoming-call log line, the
message when a stop cuts a call, the C heap's release after each call) are
here, so the composition root reads as the order in which parts are built,
started and stopped. Nothing here builds
a part: each function is handed what it works on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import AppConfig, Secret, environ_token, read_token
from appliance.errors import ConfigError, TwilioError
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.ports import CallEnded, EngineEvent
from appliance.system.native_heap import HeapRelease
from appliance.system.notify import Notifier, watchdog_interval_s

if TYPE_CHECKING:
    from appliance.provisioning.phone import PhoneProvisioning
    from appliance.ui.controller import PanelController
    from appliance.update.phone_updater import PhoneUpdater

__all__ = [
    "DEFAULT_CLOSE_MESSAGE",
    "TOKEN_POLL_S",
    "ServiceStatus",
    "TokenRefresh",
    "TokenSource",
    "fresh_phone",
    "latest_token",
    "log_call_cut",
    "log_incoming",
    "ping_watchdog",
    "release_heap_after_calls",
    "serve_commands",
    "watch_token",
]

logger = logging.getLogger(__name__)

TOKEN_POLL_S = 5.0
DEFAULT_CLOSE_MESSAGE = (
    "A call is currently in progress. Leaving or reloading this page will end the call."
)


class TokenSource:
    """The token file, re-read when its modification time changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None

    def read(self) -> Secret:
        if self.path is None:
            token = environ_token()
            if token is None:
                raise ConfigError(
                    "phone.token_file",
                    "no token file configured and APPLIANCE_TOKEN unset",
                )
            return token
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise ConfigError("phone.token_file", f"cannot read {self.path}") from exc
        token = read_token(self.path)
        self._mtime = mtime
        return token

    def present(self) -> bool:
        """Whether there is a token to read: the file exists (or, with no
        file configured, ``APPLIANCE_TOKEN`` is set). A file that is there
        but cannot be used is a configuration error for :meth:`read`."""
        if self.path is None:
            return environ_token() is not None
        return os.path.lexists(self.path)

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            return self.path.stat().st_mtime != self._mtime
        except OSError:
            return False


class ServiceStatus:
    """systemd's STATUS line tells the truth: registered, or why not (the
    last error the Device reported)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._last_error: str | None = None

    def attach(self, device: Device) -> None:
        """Follow ``device``'s ready, offline and error events."""
        device.on("ready", self._on_ready)
        device.on(
            "offline",
            lambda _d: self._notifier.status(self.why_not("offline, reconnecting")),
        )
        device.on("error", self._on_error)

    def failed(self, why: str) -> None:
        """Record why the phone is not registered (until the next ready)."""
        self._last_error = why

    def why_not(self, default: str) -> str:
        """The STATUS text when not registered: the last error, or ``default``."""
        why = default if self._last_error is None else self._last_error
        return f"not registered: {why}"

    async def register(self, device: Device, token: str) -> None:
        """``device.setup(token)``; a refusal is logged and kept as the reason
        (the service keeps running: a new token brings the phone up)."""
        try:
            await device.setup(token)
        except TwilioError as exc:
            logger.error("the gateway refused the token: %s", exc)
            self.failed(f"the gateway refused the token: {exc}")

    def ready(self, device: Device) -> None:
        """READY to systemd, with STATUS: registered, or why not."""
        self._notifier.ready(
            f"registered as {device.identity}"
            if device.status() != "offline"
            else self.why_not("connecting to the gateway")
        )

    def _on_error(self, error: TwilioError) -> None:
        logger.warning("device error %s", error)
        self._last_error = str(error)

    def _on_ready(self, ready: Device) -> None:
        self._last_error = None
        self._notifier.status(f"registered as {ready.identity}")


class TokenRefresh:
    """Gives ``device`` the token file's token when it is a new one.

    ``current`` holds the token last given (shared with the panel's Ready).
    """

    def __init__(self, tokens: TokenSource, device: Device, current: list[str]) -> None:
        self._tokens = tokens
        self._device = device
        self._current = current

    async def refresh(self, _device: Device | None = None) -> None:
        """Re-read the token (on ``token_will_expire`` or a changed file)."""
        try:
            token = self._tokens.read()
        except ConfigError as exc:
            logger.error("cannot refresh the token: %s", exc)
            return
        current = self._current
        if current and token.reveal() == current[0]:
            # Nothing new to send; re-sending the same token would not help.
            logger.warning(
                "the token is about to expire and no new one was provisioned yet"
            )
            return
        current[:] = [token.reveal()]
        await self._device.update_token(token.reveal())


def latest_token(current: list[str]) -> str:
    """The newest token provisioning gave (for the panel's Ready gesture)."""
    if not current:
        raise ConfigError("phone.provisioner_url", "no token yet: not provisioned")
    return current[0]


def log_incoming(conn: Connection) -> None:
    """The journal line of an incoming call."""
    logger.info("incoming call from %s", conn.parameters.get("From"))


def release_heap_after_calls(device: Device) -> HeapRelease:
    """Trim the C heap once each call's objects are gone (system/native_heap.py).

    The release waits for the ended call's own tasks (its media teardown
    among them) and is skipped while another call is in progress. Close it
    after the Device is destroyed.
    """
    release = HeapRelease(busy=lambda: bool(device.connections()))

    def on_fact(fact: EngineEvent) -> None:
        if isinstance(fact, CallEnded):
            release.after(fact.connection.wait_closed)

    device.subscribe(on_fact)
    return release


def log_call_cut(device: Device) -> None:
    """At shutdown: say so when the stop cuts a call (``close_protection``)."""
    if device.status() == "busy" and device.options.close_protection:
        message = device.options.close_protection
        logger.warning(
            "%s", message if isinstance(message, str) else DEFAULT_CLOSE_MESSAGE
        )


async def serve_commands(
    provisioning: PhoneProvisioning | None,
    confirm: Callable[[], Awaitable[str]] | None,
    updater: PhoneUpdater | None,
) -> None:
    """With a runtime directory (systemd's ``RuntimeDirectory=``), the control
    socket: ``appliance provision`` with a provisioning client (``confirm``
    asks on the panel before a reset; None: no panel) and ``appliance
    update`` with an updater. Returns at once when there is neither."""
    from appliance.system.control import SOCKET_NAME, Handler, serve_control

    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    commands: dict[str, Handler] = {}
    if provisioning is not None:
        from appliance.provisioning.control import provisioning_commands

        commands.update(provisioning_commands(provisioning.status, confirm))
    if updater is not None:
        from appliance.update.control import update_commands

        commands.update(update_commands(updater.updater))
    if runtime and commands:
        await serve_control(Path(runtime) / SOCKET_NAME, commands)


async def fresh_phone(
    config: AppConfig,
    phone: tuple[TokenSource, Device, list[str], ServiceStatus],
    panel: PanelController | None,
    provision: Callable[[str], Awaitable[None]],
) -> None:
    """A phone with neither a token nor a provisioner (the image's defaults).

    Waits until the token file appears or a USB stick enrolls the phone
    (:mod:`appliance.provisioning.waiting`). With a token, the phone leaves
    the waiting screen, registers, and follows the file as
    :func:`watch_token` does; with a stick, ``provision`` runs the
    provisioning client for the provisioner the stick named. A token file
    that appears but cannot be used (readable by others, not a token) is
    logged and waited on until it is fixed.

    Args:
        phone: the token file, the Device, the newest token (shared with
            the panel's Ready) and the STATUS line.
    """
    from appliance.provisioning.waiting import (
        WAITING,
        usb_source,
        wait_for_token_or_stick,
    )

    tokens, device, current, status = phone
    if panel is not None:
        panel.show_provisioning("", "", WAITING.capitalize())
    problem = ""
    while True:
        url = await wait_for_token_or_stick(
            tokens.present,
            usb_source(config),
            config.credential_file,
            usb_result=panel.show_usb_result if panel else lambda _m, _c: None,
        )
        if url is not None:
            await provision(url)
            return
        try:
            token = tokens.read()
        except ConfigError as exc:
            if str(exc) != problem:
                logger.error("%s", exc)
                problem = str(exc)
            await asyncio.sleep(TOKEN_POLL_S)
            continue
        break
    logger.info("the token file appeared; registering")
    current[:] = [token.reveal()]
    refresh = TokenRefresh(tokens, device, current).refresh
    device.on("token_will_expire", refresh)
    if panel is not None:
        panel.show_provisioning("", "", "")
    await status.register(device, current[0])
    await watch_token(tokens, refresh)


async def watch_token(
    tokens: TokenSource, refresh: Callable[[], Awaitable[None]]
) -> None:
    """Poll the token file; ``refresh`` when it changed."""
    while True:
        await asyncio.sleep(TOKEN_POLL_S)
        if tokens.changed():
            logger.info("token file changed; updating the token")
            await refresh()


async def ping_watchdog(notifier: Notifier) -> None:
    """Ping systemd's watchdog at its interval (nothing without one)."""
    interval = watchdog_interval_s()
    if interval is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
