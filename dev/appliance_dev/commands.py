"""The development commands of ``appliance``: ``phone``, ``demo`` and ``sim``.

This distribution (appliance-devtools) is installed beside the firmware on a
developer's machine and in CI, never on a phone. Its commands join the
``appliance`` command line through the ``appliance.commands`` entry-point
group (see ``appliance.cli.build_parser``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from appliance.cli import add_log_level, add_secret_options, fail, read_secret
from appliance.errors import ConfigError
from appliance.log import configure_logging

__all__ = ["add_demo_parser", "add_phone_parser", "add_sim_parser"]

_Subparsers = Any  # argparse's _SubParsersAction is private
#: Where a phone's Access Token may come from besides --token-file (the same
#: variable ``appliance run`` reads).
TOKEN_ENV = "APPLIANCE_TOKEN"


# --------------------------------------------------------------------- phone


def add_phone_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance phone``: one Device driven by JSON lines (stdin/stdout)."""
    parser = subparsers.add_parser(
        "phone",
        help="run one phone driven by JSON commands on stdin",
        description="Register a Device and print its events as JSON lines on "
        "stdout; read commands as JSON lines on stdin (see appliance_dev.agent). "
        "Logs go to stderr.",
    )
    parser.add_argument(
        "--signaling-url", required=True, metavar="URL", help="ws:// or wss:// URL"
    )
    add_secret_options(parser, "token", TOKEN_ENV, "Access Token")
    parser.add_argument("--input", metavar="DEV", help="input device (tone:440)")
    parser.add_argument(
        "--output", metavar="DEV", help="output device, e.g. file:x.wav"
    )
    parser.add_argument(
        "--local-address",
        action="append",
        metavar="IP",
        help="gather ICE host candidates on this address (repeatable)",
    )
    parser.add_argument(
        "--auto-answer", action="store_true", help="accept incoming calls at once"
    )
    parser.add_argument(
        "--no-sounds",
        action="store_true",
        help="no ring, answer or hang-up sounds: only call audio on the speaker",
    )
    parser.add_argument("--allow-incoming-while-busy", action="store_true")
    parser.add_argument("--enable-ringing-state", action="store_true")
    parser.add_argument(
        "--backoff-max-ms", type=int, metavar="N", help="reconnect cap (>= 3000)"
    )
    add_log_level(parser, "WARNING")
    parser.set_defaults(handler=run_phone)


def run_phone(args: argparse.Namespace) -> int:
    """Handle ``appliance phone``."""
    from appliance.phone.options import parse_options
    from appliance_dev.agent import run_agent

    try:
        token = read_secret(args.token_file, "--token-file", TOKEN_ENV)
    except ConfigError as exc:
        return fail(str(exc))
    if not token:
        return fail(f"--token-file FILE (mode 0600) or ${TOKEN_ENV} is required")
    options: dict[str, Any] = {"signaling_url": args.signaling_url}
    if args.input is not None:
        options["input_device"] = args.input
    if args.output is not None:
        options["output_device"] = args.output
    if args.local_address:
        options["local_addresses"] = list(args.local_address)
    if args.allow_incoming_while_busy:
        options["allow_incoming_while_busy"] = True
    if args.enable_ringing_state:
        options["enable_ringing_state"] = True
    if args.backoff_max_ms is not None:
        options["backoff_max_ms"] = args.backoff_max_ms
    try:
        parse_options(options)  # fail fast with a one-line error (exit 2)
    except ConfigError as exc:
        return fail(str(exc))
    # stdout carries the JSON event stream; logs must stay on stderr.
    configure_logging(args.log_level)
    return asyncio.run(
        run_agent(
            token, options, auto_answer=args.auto_answer, sounds=not args.no_sounds
        )
    )


# --------------------------------------------------------------------- demo


def add_demo_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance demo``: a real call between two simulated phones."""
    parser = subparsers.add_parser(
        "demo",
        help="call between two simulated phones over a local exchange",
        description="Start a local exchange and two phones, place a call, "
        "answer, send DTMF, hang up; print the timeline and write what each "
        "phone heard as WAV files.",
    )
    parser.add_argument("--out", default="demo-out", help="directory for the WAV files")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``appliance demo``."""
    from appliance_dev import demo

    return demo.main(args.out)


# ----------------------------------------------------------------------- sim


def add_sim_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance sim``: the whole phone on a desktop (no GPIO)."""
    parser = subparsers.add_parser(
        "sim",
        help="the desk phone on a desktop: keyboard keypad, OLED in the terminal",
        description="Run the phone with gpiozero's mock pins and the OLED drawn "
        "in the terminal. Without --signaling-url a local exchange and a second "
        "phone (bob, dial 2#; echo is 3#) run in-process. Keys: 0-9*# keypad, "
        "Enter accept, Backspace/Esc hangup, r ready, m mute, q quit. With stdin "
        "not a terminal, commands are read line by line (see appliance/sim.py).",
    )
    parser.add_argument("--signaling-url", metavar="URL", help="an external exchange")
    add_secret_options(
        parser, "token", TOKEN_ENV, "Access Token (with --signaling-url)"
    )
    parser.add_argument(
        "--local-address", action="append", metavar="IP", help="ICE host address"
    )
    parser.add_argument("--input", default="null", metavar="DEV", help="microphone")
    parser.add_argument(
        "--output", default="null", metavar="DEV", help="speaker (alsa:default)"
    )
    parser.add_argument("--pinmap", type=Path, metavar="FILE", help="hw/pinmap-*.toml")
    parser.add_argument("--country", default="US", help="ring cadence country")
    parser.add_argument(
        "--directory", action="append", metavar="CODE=NAME", help="dial code"
    )
    parser.add_argument("--frames", metavar="DIR", help="save every frame as PNG")
    parser.add_argument("--fps", type=float, default=10.0, help="OLED frame rate cap")
    parser.add_argument(
        "--bob-answer-after", type=float, default=1.0, metavar="S", help="bob rings"
    )
    parser.add_argument(
        "--no-ready", action="store_true", help="do not press Ready at start"
    )
    parser.add_argument(
        "--export-screens", metavar="DIR", help="render every screen as PNG and exit"
    )
    parser.add_argument(
        "--web-port",
        type=int,
        default=8443,
        metavar="PORT",
        help="the phone's web page on https://127.0.0.1:PORT/ (0: a free port)",
    )
    parser.add_argument("--no-web", action="store_true", help="serve no web page")
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep the web page's password and certificate in DIR "
        "(default: a temporary directory, removed at exit)",
    )
    add_log_level(parser, "WARNING")
    parser.set_defaults(handler=run_sim)


def run_sim(args: argparse.Namespace) -> int:
    """Handler of ``appliance sim``."""
    from appliance_dev import sim

    return sim.main(args)
