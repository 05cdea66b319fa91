"""Composition root: the one place that turns configuration into objects.

:func:`build_device` and :func:`open_front_panel` build the phone and its
front panel from parsed configuration, choosing backends by name: audio
device ids pick the audio backend (``alsa:`` on a phone), ``ui.pin_factory``
the GPIO pins (``lgpio`` on a Pi, ``mock`` for the simulator and tests, with
:class:`~appliance.hardware.mock.MockPanelHardware` as the finger), and
``ui.display_driver`` the OLED (``ssd1306``/``sh1106`` through luma,
``dummy``, or a registered one such as the simulator's ``terminal``). The
service (``appliance run``), the simulator and the demo all build through
them; the hardware self-test (:func:`open_check`) opens the same panel parts.
A configuration error that stops the service is also drawn on the OLED
(:func:`config_failed`, :func:`show_config_error`).

:func:`run_service` is the phone service. Start-up order: config and
logging, token, Device, signal handlers, front panel, the updater (with
``[update] url``; it resumes before setup so a release on trial sees its
health facts), setup (register), then READY to systemd and the audio check,
then the long-lived tasks (watchdog ping, token-file watch, updater).
Shutdown order is the reverse: stop the tasks, end calls
(``close_protection`` logs its message when a call is cut by the stop),
destroy the Device, STOPPING. A restart into another release exits with the
updater's status (75) for systemd to start the unit again.

The token is re-read when the gateway says it will expire and whenever the
token file changes. A phone with no token and no provisioner waits for the
file or a USB stick instead of exiting (``service_tasks.fresh_phone``).

This stays the one place that wires parts together. Two helpers beside it
hold what is not wiring: :mod:`appliance.service_tasks` (the service's
long-lived tasks, its STATUS line and token source) and
:mod:`appliance.config_error` (the error screen, handed the OLED from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from appliance.audio.helper import AudioHelper
from appliance.config import AppConfig
from appliance.errors import (
    ApplianceError,
    AudioDeviceError,
    ConfigError,
    HardwareError,
    TwilioError,
)
from appliance.log import configure_logging
from appliance.phone.device import Device
from appliance.phone.options import DeviceOptions
from appliance.service_tasks import (
    ServiceStatus,
    TokenRefresh,
    TokenSource,
    fresh_phone,
    latest_token,
    log_call_cut,
    log_incoming,
    ping_watchdog,
    release_heap_after_calls,
    serve_commands,
    watch_token,
)
from appliance.system.heap import freeze_startup_heap
from appliance.system.notify import Notifier

if TYPE_CHECKING:
    # The front panel needs gpiozero and luma (the "hardware" extra); they are
    # imported when a panel is opened, so a phone without them still calls.
    from appliance.hardware.display import Display
    from appliance.hardware.gpio import FrontPanelIO
    from appliance.hardware.mock import MockPanelHardware
    from appliance.hardware.pinmap import PinMap
    from appliance.provisioning.phone import PhoneProvisioning
    from appliance.selftest.runner import CheckRunner
    from appliance.ui.controller import PanelController
    from appliance.ui.settings import UiConfig
    from appliance.update.phone_updater import PhoneUpdater

__all__ = [
    "FrontPanel",
    "HardwareCheck",
    "PanelParts",
    "build_device",
    "config_failed",
    "open_check",
    "open_front_panel",
    "open_panel_parts",
    "provision_phone",
    "run_service",
    "show_config_error",
    "start_updater",
]

logger = logging.getLogger(__name__)


async def run_service(
    config: AppConfig, *, on_panel: Callable[[FrontPanel], None] | None = None
) -> int:
    """Run the phone until SIGTERM/SIGINT; return the exit status.

    ``on_panel`` is handed the front panel once it is open (the test rig's
    finger on mock pins); ``appliance run`` passes none.
    """
    notifier = Notifier()
    tokens = TokenSource(config.token_file)
    device = build_device(config.device)
    heap_release = release_heap_after_calls(device)
    # The front panel may change the tones' country later (ui/desk.py); a
    # phone without one still plays the configured dial tone and ringback.
    device.audio.country = config.ui.country
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    status_line = ServiceStatus(notifier)
    status_line.attach(device)
    device.on("incoming", log_incoming)

    current: list[str] = []  # the newest token, for Ready and provisioning
    refresh_token = TokenRefresh(tokens, device, current).refresh

    url = config.provisioner_url
    # No token and no provisioner (the image's defaults): wait for either,
    # unless a stick enrolled this phone before (provisioning/waiting.py).
    fresh = url is None and not tokens.present()
    if fresh:
        from appliance.provisioning.waiting import WAITING, saved_provisioner

        url = await asyncio.to_thread(saved_provisioner, config.credential_file)
        fresh = url is None
    provisioned = url is not None
    if not provisioned and not fresh:
        device.on("token_will_expire", refresh_token)
        try:
            token = tokens.read()
        except ConfigError as exc:
            logger.error("%s", exc)
            await asyncio.to_thread(show_config_error, config.ui, exc)
            return 2
        current.append(token.reveal())
    # The front panel attaches before setup so it sees the first "ready".
    panel = contextlib.AsyncExitStack()
    try:
        front = await open_front_panel(
            config.ui,
            device,
            (lambda: latest_token(current))
            if provisioned
            else (lambda: tokens.read().reveal()),
            panel,
        )
    except ConfigError as exc:
        logger.error("%s", exc)
        await panel.aclose()
        # The pin map is at fault, and it says where the OLED is: journal only.
        logger.error("not shown on the display: the pin map (ui.pinmap) is at fault")
        return 2
    if front is not None and on_panel is not None:
        on_panel(front)
    from appliance.ui.desk import open_call_log  # the log, and its panel screens

    calls = await open_call_log(
        config.ui, device, front.controller if front else None, panel
    )
    provisioning = (
        provision_phone(config, device, notifier, front, current, url)
        if url is not None
        else None
    )
    status: list[int] = []  # the exit status of a restart into another release
    updater = start_updater(config, device, front, stop, status)
    from appliance.web.server import start_web  # the phone's page (docs/web.md)

    await start_web(config, device, front, calls, panel, stop, status)
    if fresh:
        notifier.ready(f"not registered: {WAITING}")  # fresh_phone shows it
    elif provisioning is None:
        await status_line.register(device, current[0])
        status_line.ready(device)
    else:
        # Never exit for want of credentials: the provisioning task brings
        # the phone up once someone approves it.
        notifier.ready("not registered: waiting for provisioning")
    if updater is not None:
        updater.service_ready(device.audio.check_devices)
    logger.info("phone service started (%s)", ", ".join(config.sources))
    freeze_startup_heap()  # no full collection pass in the middle of a call

    async with asyncio.TaskGroup() as group:
        confirm = front.controller.confirm_reset if front else None
        watchers = [
            group.create_task(
                provisioning.run()
                if provisioning is not None
                else fresh_phone(
                    config,
                    (tokens, device, current, status_line),
                    front.controller if front is not None else None,
                    lambda url: provision_phone(
                        config, device, notifier, front, current, url
                    ).run(),
                )
                if fresh
                else watch_token(tokens, refresh_token)
            ),
            group.create_task(ping_watchdog(notifier)),
            group.create_task(serve_commands(provisioning, confirm, updater)),
        ]
        if updater is not None:
            watchers.append(group.create_task(updater.run()))
        await stop.wait()
        for task in watchers:
            task.cancel()

    notifier.stopping()
    log_call_cut(device)
    await panel.aclose()
    await device.destroy()
    await heap_release.close()
    if updater is not None:
        updater.close()
    logger.info("phone service stopped")
    return status[0] if status else 0


def start_updater(
    config: AppConfig,
    device: Device,
    front: FrontPanel | None,
    stop: asyncio.Event,
    status: list[int],
) -> PhoneUpdater | None:
    """The remote updater, if ``[update] url`` is set (docs/updates.md).

    It resumes before the Device registers, so that a release on trial sees
    its health facts; it hears the Device's calls and the panel's keys, and
    shows its steps on the panel. Its restart stops the service with
    ``RESTART_EXIT_STATUS`` in ``status``; systemd starts the unit again. An
    updater that cannot start (no trust anchor, ``appliance update`` holding
    the lock) is logged and left out: the phone still takes calls.
    """
    if not config.update.enabled:
        return None
    from appliance.update.phone_updater import RESTART_EXIT_STATUS, PhoneUpdater

    async def restart() -> None:
        logger.warning("restarting into another release")
        status[:] = [RESTART_EXIT_STATUS]
        stop.set()
        await asyncio.Event().wait()  # cancelled as the service stops

    try:
        updater = PhoneUpdater(
            config.update,
            restart=restart,
            show=front.controller.show_update if front is not None else None,
        )
        updater.open()
    except ApplianceError as exc:
        logger.error("updates disabled: %s", exc)
        return None
    updater.attach(device)
    if front is not None:
        front.controller.input_listeners.append(updater.key_pressed)
    return updater


def provision_phone(
    config: AppConfig,
    device: Device,
    notifier: Notifier,
    front: FrontPanel | None,
    current: list[str],
    url: str | None = None,
) -> PhoneProvisioning:
    """The provisioning client of a phone with ``phone.provisioner_url`` (or
    ``url``, the provisioner a stick named on a phone configured without).

    It asks for a device code and shows it on the panel, stores the device
    credential, and gives the Device its tokens: ``setup`` while the Device is
    offline and has no call, else ``update_token`` on the live connection (a
    call in progress is never dropped by a refresh). ``current`` holds the
    latest token for the panel's Ready gesture.
    """
    from appliance.provisioning.flow import ProvisioningView
    from appliance.provisioning.phone import PhoneProvisioning
    from appliance.provisioning.waiting import usb_source

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

    url = url or config.provisioner_url
    assert url is not None
    client = PhoneProvisioning(
        url,
        config.credential_file,
        ca_file=config.provisioner_ca_file,
        stick=usb_source(config),
        apply_token=apply_token,
        show=show,
        status=notifier.status,
        usb_result=front.controller.show_usb_result if front is not None else None,
    )
    device.on("token_will_expire", lambda _d: client.token_will_expire())
    if front is not None:
        front.controller.set_reset_handler(client.reset)
    return client


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


@dataclass
class PanelParts:
    """The front panel's hardware, as :func:`open_panel_parts` opened it."""

    io: FrontPanelIO
    display: Display | None
    pinmap: PinMap
    #: The finger on the keys, with ``pin_factory = "mock"``; else None.
    mock: MockPanelHardware | None = None
    #: Why there is no display (the OLED could not be opened), if so.
    display_problem: str = ""


async def open_panel_parts(
    ui: UiConfig,
    stack: contextlib.AsyncExitStack,
    *,
    pinmap: PinMap | None = None,
) -> PanelParts:
    """Open the pins and the OLED named in ``[ui]``; they close with ``stack``.

    An OLED that cannot be opened leaves ``display`` None (and says why in
    ``display_problem``); the pins are needed.

    Raises:
        ConfigError: an invalid pin map.
        HardwareError: the GPIO pins cannot be opened (no chip, no library).
    """
    from gpiozero import GPIOZeroError

    from appliance.hardware.display import Display
    from appliance.hardware.gpio import FrontPanelIO
    from appliance.hardware.pinmap import load_pinmap

    pinmap = pinmap or load_pinmap(ui.pinmap)
    try:
        factory, mock = _pin_factory(ui.pin_factory, pinmap)
        io = FrontPanelIO(pinmap, pin_factory=factory)
    except (GPIOZeroError, ImportError, OSError) as exc:  # no chip, no library
        raise HardwareError(f"cannot open the GPIO pins: {exc}") from exc
    await stack.enter_async_context(io)
    display: Display | None = None
    problem = ""
    try:
        oled = _open_oled(ui, pinmap)
    except HardwareError as exc:
        problem = str(exc)
    else:
        display = await stack.enter_async_context(Display(oled, max_fps=ui.max_fps))
    return PanelParts(io, display, pinmap, mock, problem)


def _open_oled(ui: UiConfig, pinmap: PinMap) -> Any:
    """The luma device of the pin map's display (driver as ``ui`` says).

    Raises:
        HardwareError: the OLED cannot be opened.
    """
    from appliance.hardware.display import MirroredDevice, create_device

    spec = pinmap.display
    if ui.display_driver:
        spec = dataclasses.replace(spec, driver=ui.display_driver)
    oled = create_device(spec)
    if ui.screen_file:
        oled = MirroredDevice(oled, Path(ui.screen_file))
    return oled


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
    from appliance.ui.controller import PanelController
    from appliance.ui.settings import PanelSettings

    if not ui.enabled:
        return None
    try:
        parts = await open_panel_parts(ui, stack, pinmap=pinmap)
    except HardwareError as exc:
        logger.error("front panel disabled: %s", exc)
        return None
    if parts.display_problem:
        logger.error("OLED disabled: %s", parts.display_problem)
    settings = PanelSettings(ui.state_file or None)
    volume = await asyncio.to_thread(settings.load_volume)
    controller = PanelController(
        device,
        ui.make_panel(volume),
        io=parts.io,
        display=parts.display,
        token=token,
        settings=settings,
        address_map=address_map,
    )
    await stack.enter_async_context(controller)
    logger.info("front panel %r started", parts.pinmap.name)
    return FrontPanel(controller, parts.io, parts.display, parts.pinmap, parts.mock)


def show_config_error(ui: UiConfig, error: ConfigError) -> bool:
    """Put a fatal configuration error on the OLED ``[ui]`` names, if any.

    Blocking (I2C); see :func:`appliance.config_error.show_config_error`.

    Returns:
        Whether the error is on the screen (False: no panel, or no OLED).
    """
    from appliance import config_error
    from appliance.hardware.pinmap import load_pinmap

    return config_error.show_config_error(
        ui, error, lambda: _open_oled(ui, load_pinmap(ui.pinmap))
    )


def config_failed(paths: Sequence[Path] | None, error: ConfigError) -> int:
    """``appliance run`` with a configuration that does not validate: stderr,
    then the OLED (:func:`appliance.config_error.config_failed`).

    Returns:
        2, the exit status systemd does not restart (RestartPreventExitStatus).
    """
    from appliance import config_error

    return config_error.config_failed(paths, error, show_config_error)


@dataclass
class HardwareCheck:
    """What :func:`open_check` built: the runner, and the panel it tests."""

    runner: CheckRunner
    panel: PanelParts | None


async def open_check(
    config: AppConfig,
    stack: contextlib.AsyncExitStack,
    *,
    out: TextIO,
    outputs: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    key_timeout_s: float | None = None,
    commands: AsyncIterator[str] | None = None,
) -> HardwareCheck:
    """Build ``appliance check`` (the self-test) on this phone's hardware.

    Sound devices are ALSA's listing unless given; the panel is the one
    ``[ui]`` describes, opened as the service opens it
    (:func:`~appliance.selftest.plan.plan_check` decides what to test).

    Raises:
        ConfigError: an invalid pin map.
    """
    from appliance.hardware.alsa_devices import list_pcm_devices
    from appliance.media.devices import open_sink, open_source
    from appliance.selftest.plan import SelfTest, plan_check
    from appliance.selftest.runner import CheckRunner

    listed: list[tuple[str, str]] | None = None
    listing_problem = ""
    if outputs is None or inputs is None:
        try:
            devices = await asyncio.to_thread(list_pcm_devices)
            listed = [(d.id, d.direction) for d in devices]
        except AudioDeviceError as exc:
            listing_problem = exc.message
    panel: PanelParts | None = None
    panel_problem = ""
    if config.ui.enabled:
        try:
            panel = await open_panel_parts(config.ui, stack)
        except HardwareError as exc:
            panel_problem = str(exc)
    steps, notes = plan_check(
        listed=listed or [],
        outputs=outputs,
        inputs=inputs,
        listing_problem=listing_problem,
        panel_enabled=config.ui.enabled,
        panel_problem=panel_problem,
        display_problem=panel.display_problem if panel is not None else "",
        keys="".join(panel.pinmap.keypad.layout) if panel is not None else "",
        buttons=list(panel.pinmap.buttons.fitted()) if panel is not None else [],
    )
    test = SelfTest(steps, notes=notes, key_timeout_s=key_timeout_s)
    runner = CheckRunner(
        test,
        io=panel.io if panel is not None else None,
        screen=panel.display if panel is not None else None,
        open_sink=open_sink,
        open_source=open_source,
        out=out,
        commands=commands,
    )
    return HardwareCheck(runner, panel)


def main(config: AppConfig) -> int:
    """Entry point of ``appliance run``: logging at ``log.level``, then the service.

    Under systemd the lines go to the journal with their priority and no
    timestamp (:func:`appliance.log.configure_logging` detects it).
    """
    configure_logging(config.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_service(config))
    return 0
