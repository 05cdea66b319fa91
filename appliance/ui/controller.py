"""The front panel's asyncio adapter: Panel <-> Device, the panel I/O and the OLED.

The hardware is seen only through :mod:`appliance.hardware.ports` (the
``PanelIO`` and ``FrameSink`` Protocols and the input events); the
composition root hands in the real ones.

:class:`~appliance.ui.panel.Panel` decides; this module only moves facts and
commands between it and the world, all on the event loop:

* **Inputs.** Debounced events from :class:`~appliance.hardware.gpio.FrontPanelIO`
  (already bridged from gpiozero's thread into an asyncio queue) become
  :meth:`Panel.key` / :meth:`Panel.button` calls
  (:func:`appliance.ui.gestures.gesture_for` says which). Device and Connection events
  become Panel facts (``registered``, ``incoming``, ``accepted``, ...).
* **Commands.** What the Panel asks for is executed on the Device in order, by
  one worker task: a Hangup typed while a Dial is still creating its offer
  waits for that Dial and then ends the call it placed. Setup runs in its own
  task because :meth:`Device.setup` may wait seconds for an unreachable gateway.
  Local key feedback (:class:`PlayLocalDtmf`) and volume changes
  (:class:`SetVolume`) take effect at once, not queued
  (:mod:`appliance.ui.effects`); volume levels are saved to the settings file
  a second after the last press, off the loop (:mod:`appliance.ui.saver`).
* **Outputs.** After every input the ringer and status LED patterns are set
  (FrontPanelIO ignores a pattern that is already running) and the screen is
  rendered; a frame that differs from the last one goes to the
  :class:`~appliance.hardware.display.Display`, which writes off the loop and
  coalesces. A timer task ticks the Panel at :meth:`Panel.next_deadline` and
  redraws the call timer and the reconnect countdown once a second.

Only the call the Panel knows about (:attr:`PanelController.call`) feeds facts
to it; events of any other Connection (a second call the engine is handling
with its busy rules, a call we already hung up) are ignored.

Example::

    panel = Panel(directory={"200": "bob"})
    controller = PanelController(device, panel, io=io, display=display,
                                 token=lambda: token_file.read())
    async with controller:
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from PIL import Image

from appliance.errors import ApplianceError, ConfigError, TwilioError
from appliance.hardware.ports import (
    ButtonPressed,
    FrameSink,
    PanelEvent,
    PanelIO,
)
from appliance.phone.call import CallState
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.ports import CallOffered, EngineEvent
from appliance.tasks import TaskSet, wait_event
from appliance.ui.commands import (
    Accept,
    Command,
    Decline,
    Dial,
    Hangup,
    Ignore,
    MarkMissedSeen,
    PlayLocalDtmf,
    Reject,
    ResetCancelled,
    ResetProvisioning,
    SendDigits,
    SetCountry,
    SetDirectory,
    SetDnd,
    SetMute,
    Setup,
    SetVolume,
)
from appliance.ui.effects import PanelEffects
from appliance.ui.gestures import gesture_for
from appliance.ui.panel import Panel
from appliance.ui.reset_requests import ResetRequests
from appliance.ui.saver import SettingsSaver
from appliance.ui.screens import render
from appliance.ui.settings import PanelSettings
from appliance.ui.view import PanelButton, PanelState, PanelView, refresh_at
from appliance.ui.volume import volume_gain

__all__ = [
    "CommandListener",
    "FrameListener",
    "PanelController",
]

logger = logging.getLogger(__name__)

#: Called with each command the Panel issued and the loop time it was issued.
CommandListener = Callable[[Command, float], None]
#: Called with each new frame (after it was handed to the Display) and its view.
FrameListener = Callable[[Image.Image, PanelView], None]

#: Commands waiting for the engine; far more than a person can key in while
#: one command runs.
COMMAND_QUEUE_SIZE = 32


def _error_fields(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, TwilioError):
        return exc.code, exc.message
    # Not a Twilio error (a missing token file, ...): the generic code.
    return 31000, str(exc)


class PanelController:
    """Runs a :class:`Panel` against a :class:`Device` and the panel hardware.

    Args:
        device: the engine.
        panel: the state machine (built from config, e.g.
            :meth:`UiConfig.make_panel`).
        io: the buttons, keypad and LEDs, or ``None`` (inputs then come only
            through :meth:`key` / :meth:`button`).
        display: the OLED, or ``None``.
        token: returns the access token for the Ready gesture (``Setup``); if
            ``None``, Ready reports an error.
        address_map: rewrites a dial target before it becomes ``{"To": ...}``
            (the simulator maps ``client:echo`` to the local exchange's
            ``echo`` destination).
        settings: where volume changes are saved (the Panel was built with
            what it holds), or ``None``.

    Use ``async with`` (or :meth:`start` / :meth:`aclose`) on the running loop.
    """

    def __init__(
        self,
        device: Device,
        panel: Panel,
        *,
        io: PanelIO | None = None,
        display: FrameSink | None = None,
        token: Callable[[], str] | None = None,
        address_map: Mapping[str, str] | None = None,
        settings: PanelSettings | None = None,
    ) -> None:
        self._device = device
        self._panel = panel
        self._io = io
        self._display = display
        self._token = token
        self._address_map = dict(address_map or {})
        self._saver = (
            None
            if settings is None
            else SettingsSaver(
                settings,
                panel.volume_levels,
                lambda: panel.dnd,
                lambda: panel.edited_directory,
                lambda: panel.chosen_country,
            )
        )
        self._effects = PanelEffects(device, io)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._call: Connection | None = None
        self._offered: Connection | None = None  # while Panel.incoming runs
        self._commands: asyncio.Queue[Command] = asyncio.Queue(COMMAND_QUEUE_SIZE)
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks = TaskSet(logger, "front panel")
        self._handlers: list[tuple[str, Callable[..., None]]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._last_frame: bytes | None = None
        self._closed = False
        self.command_listeners: list[CommandListener] = []
        """Observers of issued commands (benchmarks, the simulator's log)."""
        self.frame_listeners: list[FrameListener] = []
        """Observers of new frames (the simulator saves them as PNG)."""
        self._resets = ResetRequests()
        self.input_listeners: list[Callable[[], None]] = []
        """Told of every key and button (the updater waits for a quiet phone)."""

    # --- queries -------------------------------------------------------------

    @property
    def panel(self) -> Panel:
        """The state machine."""
        return self._panel

    @property
    def call(self) -> Connection | None:
        """The call the panel is showing, if any."""
        return self._call

    def view(self) -> PanelView:
        """The panel's current view."""
        return self._panel.view()

    async def wait_for_state(self, state: PanelState | str) -> None:
        """Wait until the panel is in ``state`` (bound it with asyncio.timeout)."""
        wanted = PanelState(state)
        while self._panel.state is not wanted:
            self._changed.clear()
            await self._changed.wait()

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the Device, start the tasks and draw the first screen."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for name, handler in (
            ("ready", self._on_ready),
            ("offline", self._on_offline),
            ("connect", self._on_connect),
            ("disconnect", self._on_disconnect),
            ("cancel", self._on_cancel),
            ("error", self._on_error),
        ):
            self._device.on(name, handler)
            self._handlers.append((name, handler))
        # Ring at the invite, not once the audio ring plays (CallOffered).
        self._unsubscribe = self._device.subscribe(self._on_engine_event)
        if self._device.status() in ("ready", "busy"):
            # Set up before we were attached (the service registers at boot).
            self._panel.registered(self._device.identity or "", self._now())
        if self._io is not None:
            self._spawn(self._pump_inputs(), "panel-inputs")
        self._spawn(self._run_commands(), "panel-commands")
        self._spawn(self._run_timer(), "panel-timer")
        if self._saver is not None:
            self._spawn(self._saver.run(), "panel-settings")
        for role, level in self._panel.volume_levels().items():
            self._effects.apply_volume(SetVolume(role, level, volume_gain(level)))
        self._after_input()

    async def aclose(self) -> None:
        """Detach from the Device and stop the tasks (hardware is the caller's)."""
        if self._closed:
            return
        self._closed = True
        self._effects.play_tone(None)
        for name, handler in self._handlers:
            self._device.off(name, handler)
        self._handlers.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._tasks.close()
        if self._saver is not None:
            await self._saver.flush()

    async def __aenter__(self) -> PanelController:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- user input ----------------------------------------------------------

    def key(self, key: str) -> None:
        """Feed a keypad press (as the keypad would)."""
        self._panel.key(key, self._now())
        self._after_input()
        self._tell_input()

    def button(self, button: PanelButton | str) -> None:
        """Feed a button gesture (see :class:`~appliance.ui.panel.PanelButton`)."""
        self._panel.button(button, self._now())
        self._after_input()
        self._tell_input()

    def _tell_input(self) -> None:
        for listener in list(self.input_listeners):
            try:
                listener()
            except Exception:  # supervision boundary: an observer, not the panel
                logger.exception("input listener failed")

    def show_update(
        self,
        status: str,
        version: str = "",
        progress: float | None = None,
        reason: str = "",
    ) -> None:
        """Show a remote update's step over the idle screen ("" hides it)."""
        self._panel.update_shown(status, version, progress, reason, now=self._now())
        self._after_input()

    def apply(self, fact: Callable[[Panel, float], object]) -> None:
        """Give the Panel a fact (``fact(panel, now)``) and show the result.

        For the parts beside the engine (the call log, the clock)."""
        fact(self._panel, self._now())
        self._after_input()

    def show_provisioning(self, user_code: str, uri: str, message: str) -> None:
        """Show the provisioning screen (``uri`` as a QR code), or leave it
        when all three are empty (the phone has its identity)."""
        if user_code or uri or message:
            self._panel.provisioning(user_code, uri, message, self._now())
        else:
            self._panel.provisioned(self._now())
        self._after_input()

    def show_usb_result(self, message: str, code: int | None = None) -> None:
        """Show what reading a USB stick did for a few seconds, over any
        screen: ``Provisioned as alice``, or a refusal with its code."""
        self._panel.usb_result(message, code, self._now())
        self._after_input()

    def set_reset_handler(self, reset: Callable[[], Awaitable[object]]) -> None:
        """Offer "Reset provisioning?" (hold Hangup); ``reset`` forgets the
        credential once the long press confirmed it."""
        self._resets.handler = reset
        self._panel.reset_enabled = True

    async def confirm_reset(self) -> str:
        """Ask on the panel (``appliance provision reset``) and wait.

        Returns ``"reset"`` (confirmed by the long press and done),
        ``"cancelled"`` (another button, a call, or no answer in time),
        ``"failed"`` (confirmed, but the credential could not be removed) or
        ``"busy"`` (not now: a call is up, or nothing to reset).
        """
        if not self._panel.reset_requested(self._now()):
            return "busy"
        with self._resets.waiting() as waiter:
            self._after_input()
            return await waiter

    def _reset_failed(self, exc: ApplianceError) -> None:
        self._panel.error(31000, str(exc), self._now())
        self._after_input()

    def handle_event(self, event: PanelEvent) -> None:
        """Translate one FrontPanelIO event into a Panel input."""
        gesture = gesture_for(event)
        if isinstance(gesture, PanelButton):  # a str too: test it first
            self.button(gesture)
        elif gesture is not None:
            self.key(gesture)
        elif isinstance(event, ButtonPressed):
            logger.debug("button %s has no panel gesture", event.button)

    async def _pump_inputs(self) -> None:
        assert self._io is not None
        async for event in self._io.events():
            try:
                self.handle_event(event)
            except Exception:  # supervision boundary: one bad event, not the panel
                logger.exception("front panel event %r failed", event)

    # --- engine facts --------------------------------------------------------

    def _on_ready(self, device: Device) -> None:
        self._panel.registered(device.identity or "", self._now())
        self._after_input()

    def _on_offline(self, device: Device) -> None:
        self._panel.unregistered(device.reconnect_at, self._now())
        self._after_input()

    def _sync_reconnect_time(self) -> None:
        """Keep the offline countdown on the engine's next attempt.

        Each failed attempt moves it (backoff); the Device does not emit
        ``offline`` again for that, so the once-a-second redraw looks it up.
        """
        retry_at = self._device.reconnect_at
        if (
            self._panel.state is PanelState.OFFLINE
            and self._panel.view().next_retry_at != retry_at
        ):
            self._panel.unregistered(retry_at, self._now())

    def _on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, CallOffered):
            self._on_incoming(event.connection)

    def _on_incoming(self, conn: Connection) -> None:
        if self._call is not None:
            return  # busy: the engine's rules apply to the second call
        self._offered = conn  # what a Decline (do-not-disturb) turns away
        self._panel.incoming(
            conn.parameters.get("From", ""), conn.custom_parameters, self._now()
        )
        if self._panel.state is PanelState.RINGING:
            self._call = conn
        self._after_input()
        self._offered = None

    def _on_connect(self, conn: Connection) -> None:
        if conn is self._call:
            self._panel.accepted(self._now())
            self._after_input()

    def _on_disconnect(self, conn: Connection) -> None:
        if conn is self._call:
            self._call = None
            self._panel.disconnected(self._now())
            self._after_input()

    def _on_cancel(self, conn: Connection) -> None:
        if conn is self._call:
            self._call = None
            self._panel.cancelled(self._now())
            self._after_input()

    def _on_error(self, error: TwilioError) -> None:
        conn = error.connection
        if conn is not None and conn is not self._call:
            return  # a call we no longer show
        self._panel.error(error.code, error.message, self._now())
        self._after_input()

    def _on_ringing(self, conn: Connection) -> None:
        if conn is self._call:
            self._panel.ringing(self._now())
            self._after_input()

    # --- commands ------------------------------------------------------------

    def _dispatch(self, command: Command, now: float) -> None:
        for listener in self.command_listeners:
            listener(command, now)
        if isinstance(command, PlayLocalDtmf):
            self._effects.play_local(command.digit)
        elif isinstance(command, SetVolume):
            self._effects.apply_volume(command)
            logger.info("%s volume level %d", command.role, command.level)
            if self._saver is not None:
                self._saver.changed()
        elif isinstance(command, Setup):
            self._spawn(self._setup(), "panel-setup")
        elif isinstance(command, Decline):
            self._decline(command)
        elif isinstance(command, SetDnd | SetDirectory | SetCountry):
            if isinstance(command, SetDnd):
                logger.info("do-not-disturb %s", "on" if command.on else "off")
            elif isinstance(command, SetCountry):
                logger.info("tones of %s", command.country)
            if self._saver is not None:
                self._saver.changed()
        elif isinstance(command, MarkMissedSeen):
            pass  # the call log listens (command_listeners)
        elif isinstance(command, ResetProvisioning):
            logger.warning("provisioning reset confirmed on the panel")
            self._spawn(self._resets.run(self._reset_failed), "panel-reset")
        elif isinstance(command, ResetCancelled):
            logger.info("provisioning reset cancelled on the panel")
            self._resets.answer("cancelled")
        else:
            try:
                self._commands.put_nowait(command)
            except asyncio.QueueFull:
                # Only if the engine is stuck (e.g. a Dial that never returns):
                # a key pressed then is dropped rather than queued for later.
                logger.warning("front panel busy; %s dropped", command)

    def _decline(self, command: Decline) -> None:
        conn = self._offered
        if conn is not None and self._loop is not None:
            # After the offer's other listeners (the call log) have seen it.
            self._loop.call_soon(self._decline_now, conn, command.silent)

    def _decline_now(self, conn: Connection, silent: bool) -> None:
        if conn.state is not CallState.PENDING:
            return
        logger.info(
            "do-not-disturb: call from %s %s",
            conn.parameters.get("From", ""),
            "ignored" if silent else "declined",
        )
        if silent:
            conn.ignore()
        else:
            conn.reject(busy=True)

    async def _run_commands(self) -> None:
        while True:
            command = await self._commands.get()
            try:
                await self._execute(command)
            except ApplianceError as exc:
                logger.warning(
                    "front panel: %s failed: %s", type(command).__name__, exc
                )
                self._panel.error(*_error_fields(exc), self._now())
                self._after_input()
            except Exception:  # supervision boundary of the command worker
                logger.exception("front panel command %r failed", command)

    async def _execute(self, command: Command) -> None:
        call = self._call
        if isinstance(command, Dial):
            to = self._address_map.get(command.to, command.to)
            logger.info("front panel dials %s", to)
            conn = await self._device.connect({"To": to})
            if self._panel.state is not PanelState.CALLING:
                await conn.disconnect()  # hung up while the offer was built
                return
            self._call = conn
            conn.on("ringing", lambda _early: self._on_ringing(conn))
            self._panel.outgoing_started(command.to, self._now())
            self._after_input()
        elif call is None:
            logger.debug("%s with no call ignored", type(command).__name__)
        elif isinstance(command, Accept):
            await call.accept()
        elif isinstance(command, Reject):
            self._call = None
            if call.state is CallState.PENDING:
                call.reject()
        elif isinstance(command, Ignore):
            self._call = None
            if call.state is CallState.PENDING:
                call.ignore()
        elif isinstance(command, Hangup):
            self._call = None
            await call.disconnect()
        elif isinstance(command, SendDigits):
            call.send_digits(command.digits)
        elif isinstance(command, SetMute):
            call.mute(command.muted)

    async def _setup(self) -> None:
        try:
            if self._token is None:
                raise ConfigError("phone.token_file", "no token source for Ready")
            await self._device.setup(self._token())
        except ApplianceError as exc:
            logger.warning("front panel setup failed: %s", exc)
            self._panel.error(*_error_fields(exc), self._now())
            self._after_input()

    @property
    def progress_tone(self) -> str | None:
        """The local tone playing: ``dialtone``, ``ringback`` or None."""
        return self._effects.progress_tone

    # --- outputs -------------------------------------------------------------

    def _after_input(self, *, wake: bool = True) -> None:
        """Drain commands, set the LEDs, redraw; call after every Panel input."""
        if self._closed or self._loop is None:
            return
        now = self._now()
        for command in self._panel.commands_to_send():
            self._dispatch(command, now)
        self._effects.show(self._panel)
        self._redraw()
        self._changed.set()
        if wake:
            self._wake.set()

    def _redraw(self) -> None:
        view = self._panel.view()
        image = render(view)
        frame = image.tobytes()
        if frame == self._last_frame:
            return
        self._last_frame = frame
        if self._display is not None:
            self._display.show(image)
        for listener in self.frame_listeners:
            listener(image, view)

    async def _run_timer(self) -> None:
        while True:
            now = self._now()
            times = [self._panel.next_deadline(), refresh_at(self._panel.view(), now)]
            deadline = min((t for t in times if t is not None), default=None)
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - now) + 0.001
            await wait_event(self._wake, timeout)
            self._sync_reconnect_time()
            self._panel.tick(self._now())
            self._after_input(wake=False)

    # --- helpers -------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)
