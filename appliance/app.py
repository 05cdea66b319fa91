"""Composition root: the one place that turns configuration into objects.

:func:`build_device` and :func:`open_front_panel` build the phone and its
front panel from parsed configuration, choosing backends by name: audio
device ids pick the audio backend (``alsa:`` on a phone), ``ui.pin_factory``
the GPIO pins (``lgpio`` on a Pi, ``mock`` for the simulator and tests, with
:class:`~appliance.hardware.mock.MockPanelHardware` as the finger), and
``ui.display_driver`` the OLED (``ssd1306``/``sh1106`` through luma,
``dummy``, or a registered one such as the simulator's ``terminal``). The
service (``appliance run``), the simulator and the demo all build through
them.

:func:`run_service` is the phone service. Start-up order: config and
logging, token, Device, signal handlers, setup (register), then READY to
systemd, then the long-lived tasks (watchdog ping, token-file watch). Shutdown
order is the reverse: stop the tasks, end calls (``close_protection`` logs its
message when a call is cut by the stop), destroy the Device, STOPPING.

The token is re-read when the gateway says it will expire and whenever the
token file changes, so that provisioning (USB stick, QR code, refresh service)
only has to write the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.audio.helper import AudioHelper
from appliance.config import AppConfig, Secret, environ_token, read_token
from appliance.errors import ConfigError, HardwareError, TwilioError
from appliance.log import configure_logging
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.options import DeviceOptions
from appliance.system.notify import Notifier, watchdog_interval_s

if TYPE_CHECKING:
    # The front panel needs gpiozero and luma (the "hardware" extra); they are
    # imported when a panel is opened, so a phone without them still calls.
    from appliance.hardware.display import Display
    from appliance.hardware.gpio import FrontPanelIO
    from appliance.hardware.mock import MockPanelHardware
    from appliance.hardware.pinmap import PinMap
    from appliance.provisioning.phone import PhoneProvisioning
    from appliance.ui.controller import PanelController
    from appliance.ui.settings import UiConfig

__all__ = [
    "FrontPanel",
    "build_device",
    "open_front_panel",
    "provision_phone",
    "run_service",
]

logger = logging.getLogger(__name__)

TOKEN_POLL_S = 5.0
DEFAULT_CLOSE_MESSAGE = (
    "A call is currently in progress. Leaving or reloading this page will end the call."
)


class _TokenSource:
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

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            return self.path.stat().st_mtime != self._mtime
        except OSError:
            return False


async def run_service(config: AppConfig) -> int:
    """Run the phone until SIGTERM/SIGINT; return the exit status."""
    notifier = Notifier()
    tokens = _TokenSource(config.token_file)
    device = build_device(config.device)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # STATUS tells the truth: registered, or why not (the last error).
    last_error: list[str] = []

    def on_error(error: TwilioError) -> None:
        logger.warning("device error %s", error)
        last_error[:] = [str(error)]

    def why_not(default: str) -> str:
        return f"not registered: {last_error[0] if last_error else default}"

    def on_ready(ready: Device) -> None:
        last_error.clear()
        notifier.status(f"registered as {ready.identity}")

    device.on("ready", on_ready)
    device.on("offline", lambda _d: notifier.status(why_not("offline, reconnecting")))
    device.on("incoming", _log_incoming)
    device.on("error", on_error)

    current: list[str] = []

    async def refresh_token(_device: Device | None = None) -> None:
        try:
            token = tokens.read()
        except ConfigError as exc:
            logger.error("cannot refresh the token: %s", exc)
            return
        if current and token.reveal() == current[0]:
            # Nothing new to send; re-sending the same token would not help.
            logger.warning(
                "the token is about to expire and no new one was provisioned yet"
            )
            return
        current[:] = [token.reveal()]
        await device.update_token(token.reveal())

    provisioned = config.provisioner_url is not None
    if not provisioned:
        device.on("token_will_expire", refresh_token)
        try:
            token = tokens.read()
        except ConfigError as exc:
            logger.error("%s", exc)
            return 2
        current.append(token.reveal())
    # The front panel attaches before setup so it sees the first "ready".
    panel = contextlib.AsyncExitStack()
    try:
        front = await open_front_panel(
            config.ui,
            device,
            (lambda: _latest(current))
            if provisioned
            else (lambda: tokens.read().reveal()),
            panel,
        )
    except ConfigError as exc:
        logger.error("%s", exc)
        await panel.aclose()
        return 2
    provisioning = (
        provision_phone(config, device, notifier, front, current)
        if provisioned
        else None
    )
    if provisioning is None:
        try:
            await device.setup(current[0])
        except TwilioError as exc:
            # Keep running: a new token file (provisioning) brings the phone up.
            logger.error("the gateway refused the token: %s", exc)
            last_error[:] = [f"the gateway refused the token: {exc}"]
        notifier.ready(
            f"registered as {device.identity}"
            if device.status() != "offline"
            else why_not("connecting to the gateway")
        )
    else:
        # Never exit for want of credentials: the provisioning task brings
        # the phone up once someone approves it.
        notifier.ready("not registered: waiting for provisioning")
    logger.info("phone service started (%s)", ", ".join(config.sources))

    async with asyncio.TaskGroup() as group:
        watchers = [
            group.create_task(
                provisioning.run()
                if provisioning is not None
                else _watch_token(tokens, refresh_token)
            ),
            group.create_task(_ping_watchdog(notifier)),
        ]
        await stop.wait()
        for task in watchers:
            task.cancel()

    notifier.stopping()
    if device.status() == "busy" and device.options.close_protection:
        message = device.options.close_protection
        logger.warning(
            "%s", message if isinstance(message, str) else DEFAULT_CLOSE_MESSAGE
        )
    await panel.aclose()
    await device.destroy()
    logger.info("phone service stopped")
    return 0


def provision_phone(
    config: AppConfig,
    device: Device,
    notifier: Notifier,
    front: FrontPanel | None,
    current: list[str],
) -> PhoneProvisioning:
    """The provisioning client of a phone with ``phone.provisioner_url``.

    It asks for a device code and shows it on the panel, stores the device
    credential, and gives the Device its tokens: ``setup`` while the Device is
    offline and has no call, else ``update_token`` on the live connection (a
    call in progress is never dropped by a refresh). ``current`` holds the
    latest token for the panel's Ready gesture.
    """
    from appliance.provisioning.flow import ProvisioningView
    from appliance.provisioning.phone import PhoneProvisioning, UsbSource

    async def apply_token(token: str) -> None:
        current[:] = [token]
        if device.status() == "offline" and device.active_connection() is None:
            try:
                await device.setup(token)
            except TwilioError as exc:
                logger.error("the gateway refused the token: %s", exc)
        else:
            await device.update_token(token)

    def show(view: ProvisioningView) -> None:
        if front is not None:
            front.controller.show_provisioning(view.user_code, view.uri, view.message)

    assert config.provisioner_url is not None
    client = PhoneProvisioning(
        config.provisioner_url,
        config.credential_file,
        ca_file=config.provisioner_ca_file,
        stick=(
            UsbSource(config.usb_dir, config.usb_public_key_file)
            if config.usb_dir and config.usb_public_key_file
            else None
        ),
        apply_token=apply_token,
        show=show,
        status=notifier.status,
    )
    device.on("token_will_expire", lambda _d: client.token_will_expire())
    return client


def _latest(current: list[str]) -> str:
    if not current:
        raise ConfigError("phone.provisioner_url", "no token yet: not provisioned")
    return current[0]


def build_device(options: DeviceOptions) -> Device:
    """The phone engine with its parts: Device.audio on the installed backends.

    Device.audio lists devices and notices hot-plug through the monitor of
    the audio backend that can list (the ALSA card monitor on a phone).
    """
    return Device(options=options, audio=AudioHelper())


@dataclass
class FrontPanel:
    """What :func:`open_front_panel` built (all closed with its exit stack)."""

    controller: PanelController
    io: FrontPanelIO
    display: Display | None
    pinmap: PinMap
    #: The finger on the keys, with ``pin_factory = "mock"``; else None.
    mock: MockPanelHardware | None = None


def _pin_factory(name: str, pinmap: PinMap) -> tuple[Any, MockPanelHardware | None]:
    """The gpiozero pin factory named in ``ui.pin_factory`` (style 4.1 #4)."""
    if name == "mock":
        from appliance.hardware.mock import MockPanelHardware

        mock = MockPanelHardware(pinmap)
        return mock.factory, mock
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory(), None
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory(), None
    from gpiozero.pins.native import NativeFactory

    return NativeFactory(), None


async def open_front_panel(
    ui: UiConfig,
    device: Device,
    token: Callable[[], str],
    stack: contextlib.AsyncExitStack,
    *,
    pinmap: PinMap | None = None,
    address_map: dict[str, str] | None = None,
) -> FrontPanel | None:
    """Start the front panel if ``ui.enabled``; its parts close with ``stack``.

    A panel that cannot be opened (no GPIO chip, no OLED on the bus) is logged
    and skipped: the phone still takes calls. ``[ui]`` itself was validated
    with the rest of the configuration; the pin map file is read here.

    Args:
        ui: the ``[ui]`` settings.
        device: the engine.
        token: returns the access token for the Ready gesture.
        stack: closes what is opened here.
        pinmap: a build already loaded (else ``ui.pinmap`` is read).
        address_map: rewrites dial targets (the simulator's echo).

    Raises:
        ConfigError: an invalid pin map.
    """
    from gpiozero import GPIOZeroError

    from appliance.hardware.display import Display, create_device
    from appliance.hardware.gpio import FrontPanelIO
    from appliance.hardware.pinmap import load_pinmap
    from appliance.ui.controller import PanelController
    from appliance.ui.settings import PanelSettings

    if not ui.enabled:
        return None
    pinmap = pinmap or load_pinmap(ui.pinmap)
    spec = pinmap.display
    if ui.display_driver:
        spec = dataclasses.replace(spec, driver=ui.display_driver)
    try:
        factory, mock = _pin_factory(ui.pin_factory, pinmap)
        io = FrontPanelIO(pinmap, pin_factory=factory)
    except (GPIOZeroError, ImportError, OSError) as exc:  # no chip, no library
        logger.error("front panel disabled: cannot open the GPIO pins: %s", exc)
        return None
    await stack.enter_async_context(io)
    display: Display | None = None
    try:
        oled = create_device(spec)
    except HardwareError as exc:
        logger.error("OLED disabled: %s", exc)
    else:
        display = await stack.enter_async_context(Display(oled, max_fps=ui.max_fps))
    settings = PanelSettings(ui.state_file or None)
    volume = await asyncio.to_thread(settings.load_volume)
    controller = PanelController(
        device,
        ui.make_panel(volume),
        io=io,
        display=display,
        token=token,
        settings=settings,
        address_map=address_map,
    )
    await stack.enter_async_context(controller)
    logger.info("front panel %r started", pinmap.name)
    return FrontPanel(controller, io, display, pinmap, mock)


def _log_incoming(conn: Connection) -> None:
    logger.info("incoming call from %s", conn.parameters.get("From"))


async def _watch_token(
    tokens: _TokenSource, refresh: Callable[[], Awaitable[None]]
) -> None:
    while True:
        await asyncio.sleep(TOKEN_POLL_S)
        if tokens.changed():
            logger.info("token file changed; updating the token")
            await refresh()


async def _ping_watchdog(notifier: Notifier) -> None:
    interval = watchdog_interval_s()
    if interval is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def main(config: AppConfig) -> int:
    """Entry point of ``appliance run``: logging at ``log.level``, then the service.

    Under systemd the lines go to the journal with their priority and no
    timestamp (:func:`appliance.log.configure_logging` detects it).
    """
    configure_logging(config.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_service(config))
    return 0
