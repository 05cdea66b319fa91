"""``appliance sim``: the whole desk phone on a desktop, with no GPIO.

The phone is the real thing (Device, Panel, :class:`PanelController`,
:class:`FrontPanelIO`, :class:`Display`); only the pins are gpiozero's
``MockFactory`` and the OLED is the terminal. Keys typed on the keyboard
become mock pin presses, so they travel the real input path: pin edge,
gpiozero callback, keypad scan thread, debouncer, asyncio queue, Panel.

Keyboard (the terminal in cbreak mode)::

    0-9 * #      keypad              Enter        Accept
    Backspace    Hangup (tap)        Esc          Hangup (tap)
    H            Hangup held         r            Ready
    m            Mute                + / -        volume
    h            hook (lift/replace) i            bob calls you
    D            # held (DND)        q            quit

Mute on the idle screen shows the call log (kept in memory here).

When stdin is not a terminal it is read line by line, so scripts and tests
can drive the phone. A line is keypad characters (``200#``, pressed in turn),
one of the keyboard letters above, or a word: ``ready``, ``accept``,
``hangup``, ``hold-hangup``, ``mute``, ``hook``, ``dnd`` (hold #),
``incoming``, ``quit``,
``sleep SECONDS``, ``wait STATE [SECONDS]`` (wait for a panel state such as
``in_call``; exit status 1 if it does not come). End of input quits.

With no ``--signaling-url`` the simulator starts a local exchange in-process
with fresh credentials, registers itself as ``desk`` with a token it mints,
and starts a second simulated phone, ``bob``, that answers after a second,
plays a tone and logs the DTMF digits it receives. The directory maps ``2``
to bob and ``3`` to the exchange's echo destination (dial ``2#`` or ``3#``).

The phone's web page (docs/web.md) is served as the service serves it, by
the composition root's :func:`~appliance.web.server.start_web`, on
``https://127.0.0.1:8443/`` (``--web-port``; ``--no-web`` for none). Its
password and certificate are kept in ``--state-dir``, by default a temporary
directory removed at exit, so each run asks for a password on the first
visit. The volumes and the rest set there apply to the simulated panel; they
are not saved, as the sim keeps no ``ui.state_file``. Restart on the page
ends the simulator with the service's restart status (75): there is no
systemd here to start it again.

Output: on a terminal, the OLED is drawn with Unicode half blocks and
redrawn in place; otherwise each new frame is printed after a
``screen: NAME`` line, and LED changes as ``leds: ringer=on status=off``.
``--frames DIR`` saves every frame written to the display as a PNG.
``--export-screens DIR`` renders every screen with sample data and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from appliance.app import FrontPanel, build_device, open_front_panel
from appliance.calllog.recorder import CallLogRecorder
from appliance.cli import read_secret
from appliance.config import AppConfig
from appliance.errors import ApplianceError, ConfigError
from appliance.files import write_atomic
from appliance.hardware.display import register_display_driver
from appliance.hardware.mock import HOLD_S, TAP_S, MockPanelHardware
from appliance.hardware.pinmap import (
    ButtonPins,
    KeypadPins,
    OutputPins,
    PinMap,
    load_pinmap,
)
from appliance.log import configure_logging
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.options import parse_options
from appliance.ui.controller import PanelController
from appliance.ui.desk import open_call_log
from appliance.ui.settings import UiConfig
from appliance.ui.view import PanelState, PanelView
from appliance.web.server import start_web
from appliance.web.settings import WebConfig
from appliance_dev.screen_samples import export_screens
from appliance_dev.terminal import Terminal, TerminalOled, cbreak

__all__ = ["main", "run_sim"]

logger = logging.getLogger(__name__)

SIM_IDENTITY = "desk"
BOB = "bob"
DEFAULT_DIRECTORY = {"2": BOB, "3": "echo"}
#: ``client:echo`` is the exchange's echo destination, not a client named echo.
ADDRESS_MAP = {"client:echo": "echo"}

_REPO_PINMAP = Path(__file__).resolve().parents[1] / "hw" / "pinmap-reference.toml"
#: The reference build, for an installed package without the repository's hw/.
_BUILTIN_PINMAP = PinMap(
    name="sim",
    buttons=ButtonPins(ready=5, accept=6, hangup=16, mute=26, vol_up=23, vol_down=24),
    keypad=KeypadPins(rows=(17, 27, 22, 10), columns=(9, 11, 25)),
    outputs=OutputPins(ringer=12, status=7),
)


# --------------------------------------------------------------- the sim


class _Sim:
    def __init__(
        self,
        controller: PanelController,
        hardware: MockPanelHardware,
        terminal: Terminal,
        bob: Device | None,
    ) -> None:
        self.controller = controller
        self.hw = hardware
        self.terminal = terminal
        self.bob = bob
        self.quit = asyncio.Event()
        self.status = 0
        self.hook_lifted = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def actions(self) -> dict[str, Callable[[], Any]]:
        buttons = self.hw.pinmap.buttons.fitted()

        def button(name: str, hold: float = TAP_S) -> Callable[[], Any]:
            if name not in buttons:
                return lambda: self.terminal.log(f"this build has no {name} button")
            return lambda: self.hw.tap_button(name, hold)

        return {
            "ready": button("ready"),
            "accept": button("accept"),
            "hangup": button("hangup"),
            "hold-hangup": button("hangup", HOLD_S),
            "mute": button("mute"),
            "vol+": button("vol_up"),
            "vol-": button("vol_down"),
            "hook": self.toggle_hook,
            "dnd": lambda: self.hw.tap_key("#", HOLD_S),  # hold #
            "incoming": self.bob_calls,
            "quit": self.quit.set,
        }

    def keymap(self) -> dict[str, str]:
        return {
            "\n": "accept",
            "\r": "accept",
            "\x7f": "hangup",
            "\x08": "hangup",
            "\x1b": "hangup",
            "H": "hold-hangup",
            "r": "ready",
            "m": "mute",
            "+": "vol+",
            "-": "vol-",
            "h": "hook",
            "D": "dnd",
            "i": "incoming",
            "q": "quit",
        }

    async def toggle_hook(self) -> None:
        if "hook" not in self.hw.pinmap.buttons.fitted():
            self.terminal.log("this build has no hook switch")
            return
        self.hook_lifted = not self.hook_lifted
        lifted = self.hook_lifted != self.hw.pinmap.buttons.hook_closed_on_hook
        if lifted:
            self.hw.press_button("hook")
        else:
            self.hw.release_button("hook")
        self.terminal.log("handset lifted" if self.hook_lifted else "handset replaced")

    async def bob_calls(self) -> None:
        if self.bob is None:
            self.terminal.log("no simulated bob (an external exchange is in use)")
            return
        self.terminal.log("bob calls you")
        try:
            conn = await self.bob.connect({"To": f"client:{SIM_IDENTITY}"})
        except ApplianceError as exc:
            self.terminal.log(f"bob cannot call: {exc}")
            return
        conn.on("disconnect", lambda _c: self.terminal.log("bob: call ended"))

    async def run_action(self, name: str) -> None:
        result = self.actions()[name]()
        if asyncio.iscoroutine(result):
            await result

    async def run_line(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        word = words[0].lower()
        keypad = "".join(self.hw.pinmap.keypad.layout)
        if word == "sleep" and len(words) == 2:
            await asyncio.sleep(float(words[1]))
        elif word == "wait" and len(words) in (2, 3):
            timeout = float(words[2]) if len(words) == 3 else 10.0
            try:
                async with asyncio.timeout(timeout):
                    await self.controller.wait_for_state(PanelState(words[1]))
            except (TimeoutError, ValueError):
                state = self.controller.panel.state
                self.terminal.log(f"wait {words[1]}: FAILED (panel is {state})")
                self.status = 1
                self.quit.set()
                return
            self.terminal.log(f"wait {words[1]}: ok")
        elif word in self.actions():
            await self.run_action(word)
        elif len(words[0]) == 1 and words[0] in self.keymap():
            await self.run_action(self.keymap()[words[0]])
        elif all(ch in keypad for ch in line.strip()):
            for key in line.strip():
                await self.hw.tap_key(key)
        else:
            self.terminal.log(f"unknown input {line.strip()!r}")

    async def read_pipe(self, stream: TextIO) -> None:
        loop = asyncio.get_running_loop()
        while not self.quit.is_set():
            line = await loop.run_in_executor(None, stream.readline)
            if not line:
                break
            await self.run_line(line)
        self.quit.set()

    async def read_tty(self, stream: TextIO) -> None:
        loop = asyncio.get_running_loop()
        chars: asyncio.Queue[str] = asyncio.Queue()
        fd = stream.fileno()
        loop.add_reader(
            fd, lambda: chars.put_nowait(os.read(fd, 64).decode(errors="replace"))
        )
        keypad = "".join(self.hw.pinmap.keypad.layout)
        try:
            while not self.quit.is_set():
                for ch in await chars.get():
                    if ch in keypad:
                        await self.hw.tap_key(ch)
                    elif ch in self.keymap():
                        await self.run_action(self.keymap()[ch])
        finally:
            loop.remove_reader(fd)

    async def watch_leds(self) -> None:
        last: tuple[bool, bool] | None = None
        while True:
            leds = (self.hw.led("ringer"), self.hw.led("status"))
            if leds != last:
                last = leds
                self.terminal.leds(*leds)
            await asyncio.sleep(0.01)


def _bob_device(url: str, terminal: Terminal, answer_after_s: float) -> Device:
    bob = build_device(
        parse_options(
            {
                "signaling_url": url,
                "local_addresses": ["127.0.0.1"],
                "input_device": "tone:660",
                "output_device": "null",
                "enable_ringing_state": True,
            }
        )
    )
    tasks: set[asyncio.Task[None]] = set()

    def incoming(conn: Connection) -> None:
        terminal.log(f"bob: ringing, call from {conn.parameters.get('From')}")
        conn.on("dtmf", lambda digit: terminal.log(f"bob: received DTMF {digit}"))
        conn.on("disconnect", lambda _c: terminal.log("bob: call ended"))
        conn.on("cancel", lambda: terminal.log("bob: call cancelled"))

        async def answer() -> None:
            await asyncio.sleep(answer_after_s)
            if conn.state.value == "pending":
                terminal.log("bob: answers (plays a 660 Hz tone)")
                with contextlib.suppress(ApplianceError):
                    await conn.accept()

        task = asyncio.get_running_loop().create_task(answer())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    bob.on("incoming", incoming)
    return bob


async def run_sim(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """Run the simulator until ``q``/``quit`` or end of input; return the status."""
    from appliance.exchange.config import ExchangeConfig
    from appliance.exchange.server import ExchangeServer
    from appliance.tokens import Keyring, create_access_token

    interactive = stdin.isatty() and stdout.isatty()
    terminal = Terminal(stdout, interactive=interactive)
    pinmap = load_pinmap(args.pinmap) if args.pinmap else _default_pinmap()
    directory = dict(DEFAULT_DIRECTORY)
    for entry in args.directory or ():
        code, _, name = entry.partition("=")
        directory[code] = name
    frames: Path | None = Path(args.frames) if args.frames else None
    oled = TerminalOled(terminal, frames)
    register_display_driver("terminal", lambda _spec: oled)
    # The simulator is configuration: mock pins and the terminal as the OLED,
    # built by the composition root like the service's panel.
    ui = UiConfig(
        enabled=True,
        pin_factory="mock",
        display_driver="terminal",
        max_fps=args.fps,
        country=args.country.upper(),
        directory=directory,
    )

    async with contextlib.AsyncExitStack() as stack:
        exchange: ExchangeServer | None = None
        bob: Device | None = None
        if args.signaling_url:
            url = args.signaling_url
            token_text = _read_token(args)
            local: list[str] = list(args.local_address or [])
        else:
            account = "AC" + secrets.token_hex(16)
            key = "SK" + secrets.token_hex(16)
            secret = secrets.token_urlsafe(24)
            app_sid = "AP" + secrets.token_hex(16)
            keyring = Keyring()
            keyring.add_api_key(account, key, secret)
            exchange = ExchangeServer(
                ExchangeConfig(keyring=keyring, host="127.0.0.1", port=0)
            )
            await exchange.start()
            stack.push_async_callback(exchange.close)
            url = exchange.url
            local = ["127.0.0.1"]

            def mint(identity: str) -> str:
                return create_access_token(
                    account_sid=account,
                    api_key_sid=key,
                    api_secret=secret,
                    identity=identity,
                    now=time.time(),
                    outgoing_application_sid=app_sid,
                )

            token_text = mint(SIM_IDENTITY)
            bob = _bob_device(url, terminal, args.bob_answer_after)
            stack.push_async_callback(bob.destroy)
            await bob.setup(mint(BOB))
        options: dict[str, Any] = {
            "signaling_url": url,
            "input_device": args.input,
            "output_device": args.output,
            "enable_ringing_state": True,
        }
        if local:
            options["local_addresses"] = local
        device = build_device(parse_options(options))
        stack.push_async_callback(device.destroy)
        # Closed before the device (the stack unwinds in reverse).
        panel_stack = await stack.enter_async_context(contextlib.AsyncExitStack())
        front = await open_front_panel(
            ui,
            device,
            lambda: token_text,
            panel_stack,
            pinmap=pinmap,
            address_map=ADDRESS_MAP,
        )
        if front is None or front.mock is None or front.display is None:
            raise ApplianceError("the simulated front panel did not start")
        controller, hardware, display = front.controller, front.mock, front.display
        # The call log in memory, the clock as the desktop has it.
        calls = await open_call_log(
            ui, device, controller, panel_stack, synced=lambda: True
        )

        def note_screen(_image: Image.Image, view: PanelView) -> None:
            oled.screen = view.screen.value

        controller.frame_listeners.append(note_screen)
        controller.command_listeners.append(
            lambda cmd, _t: terminal.log(f"panel: {cmd}")
        )
        sim = _Sim(controller, hardware, terminal, bob)
        restarted: list[int] = []  # the page's Restart: the service's status
        if not args.no_web:
            await _start_page(
                args,
                ui,
                token_text,
                (device, front, calls),
                panel_stack,
                sim,
                restarted,
            )
        if interactive:
            stdout.write("\x1b[2J")  # clear once; frames then redraw in place
        terminal.log(f"exchange {url}; you are {SIM_IDENTITY!r}; directory {directory}")
        background = [asyncio.get_running_loop().create_task(sim.watch_leds())]
        if not args.no_ready:
            await sim.run_action("ready")
        if interactive:
            with cbreak(stdin):
                reader = asyncio.get_running_loop().create_task(sim.read_tty(stdin))
                await sim.quit.wait()
                reader.cancel()
        else:
            background.append(
                asyncio.get_running_loop().create_task(sim.read_pipe(stdin))
            )
            await sim.quit.wait()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await display.flush()
        status = restarted[0] if restarted else sim.status
        terminal.log(f"bye (status {status})")
        return status


async def _start_page(
    args: argparse.Namespace,
    ui: UiConfig,
    token: str,
    phone: tuple[Device, FrontPanel, CallLogRecorder],
    stack: contextlib.AsyncExitStack,
    sim: _Sim,
    restarted: list[int],
) -> None:
    """Serve the phone's web page as the service does (``start_web``), on
    127.0.0.1, with its password and certificate in ``--state-dir`` (or a
    temporary directory that goes with ``stack``)."""
    if args.state_dir is not None:
        state = Path(args.state_dir)  # made by the token's write if missing
    else:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-")))
    # The status page reads the token's expiry from its file, as on a phone.
    token_file = state / "sim-token"
    await asyncio.to_thread(write_atomic, token_file, token.encode(), mode=0o600)
    config = AppConfig(
        token_file=token_file,
        ui=ui,
        web=WebConfig(address="127.0.0.1", port=args.web_port, state_dir=str(state)),
    )
    device, front, calls = phone
    page = await start_web(config, device, front, calls, stack, sim.quit, restarted)
    if page is None:
        sim.terminal.log("web page off (the log says why)")
    else:
        sim.terminal.log(f"web page {page.url} (password and certificate in {state})")


def _default_pinmap() -> PinMap:
    if _REPO_PINMAP.exists():
        return load_pinmap(_REPO_PINMAP)
    return _BUILTIN_PINMAP


def _read_token(args: argparse.Namespace) -> str:
    token = read_secret(args.token_file, "--token-file", "APPLIANCE_TOKEN")
    if token is None:
        raise ConfigError(
            "--token-file",
            "required with --signaling-url: FILE (mode 0600) or $APPLIANCE_TOKEN",
        )
    return token


def main(args: argparse.Namespace) -> int:
    """Entry point of ``appliance sim`` (see :func:`appliance.cli.add_sim_parser`)."""
    # The media and websocket libraries stay at WARNING: their INFO lines
    # would scroll the terminal OLED away.
    configure_logging(args.log_level, quiet_level=logging.WARNING)
    if args.frames:
        Path(args.frames).mkdir(parents=True, exist_ok=True)
    if args.export_screens:
        for path in export_screens(Path(args.export_screens)):
            print(path)  # the command's output
        return 0
    try:
        return asyncio.run(run_sim(args, sys.stdin, sys.stdout))
    except ConfigError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
