"""Command-line interface: ``appliance <command> ...`` (``python -m appliance``).

Each command contributes an ``add_<command>_parser(subparsers)`` function that
builds its sub-parser and sets ``handler`` to a function taking the parsed
namespace and returning the exit status. :func:`main` dispatches.

Exit status: 0 success, 2 bad input (usage or configuration), 1 runtime
failure. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import installer
from appliance.errors import ConfigError
from appliance.hardware.inventory import add_devices_parser
from appliance.log import configure_logging
from appliance.provisioning.cli import add_provision_parser, add_provisioner_parser
from appliance.update.release_cli import add_release_parser
from appliance.update.update_cli import add_update_parser
from appliance.web.cli import add_web_password_parser

if TYPE_CHECKING:
    from appliance.config import AppConfig
    from appliance.exchange.config import ExchangeConfig

__all__ = [
    "COMMANDS_GROUP",
    "add_check_parser",
    "add_exchange_parser",
    "add_layer_options",
    "add_log_level",
    "add_run_parser",
    "add_secret_options",
    "add_show_config_parser",
    "add_token_parser",
    "build_parser",
    "fail",
    "load_layers",
    "main",
    "read_secret",
]

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]
#: Entry-point group of commands added by other installed distributions.
COMMANDS_GROUP = "appliance.commands"
_Subparsers = Any  # argparse's _SubParsersAction is private


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """Give a command the ``--log-level`` option (stderr, appliance/log.py)."""
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"log level on stderr (default {default})",
    )


#: Environment variables that may carry the exchange's and the token
#: minter's secrets (the process environment is private to its user).
API_SECRET_ENV = "APPLIANCE_API_SECRET"
AUTH_TOKEN_ENV = "APPLIANCE_AUTH_TOKEN"


class _RefuseSecret(argparse.Action):
    """An option that would put a secret on the command line: refused.

    Every user of the machine reads command lines in ``ps``; the message
    names the file option and the environment variable to use instead.
    """

    def __init__(self, *args: Any, instead: str = "", **kwargs: Any) -> None:
        self.instead = instead
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string}: secrets on the command line are visible to every "
            f"user (ps); use {self.instead}"
        )


def add_secret_options(
    parser: argparse.ArgumentParser, name: str, env: str, what: str, extra: str = ""
) -> None:
    """``--NAME-file FILE`` (mode 0600) for a secret, and ``--NAME`` refusing."""
    instead = f"--{name}-file FILE (mode 0600) or ${env}{extra}"
    parser.add_argument(
        f"--{name}-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the {what} (mode 0600; default ${env})",
    )
    parser.add_argument(
        f"--{name}",
        action=_RefuseSecret,
        instead=instead,
        help=argparse.SUPPRESS,
    )


def read_secret(path: Path | None, option: str, env: str) -> str | None:
    """The secret from ``path`` (checked private), else from ``$env``, else None.

    Raises:
        ConfigError: the file is missing, empty or open to group or others.
    """
    from appliance.files import read_private

    if path is not None:
        return read_private(path, option)
    return os.environ.get(env) or None


def fail(message: str) -> int:
    """Print ``appliance: error: MESSAGE`` on stderr; return exit status 2."""
    print(f"appliance: error: {message}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------- token


def add_token_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance token``: mint an Access Token and print it."""
    parser = subparsers.add_parser(
        "token",
        help="mint a Twilio Access Token with a Voice grant",
        description="Print an Access Token (JWT) for IDENTITY, signed with an "
        "API key secret (signaling-protocol.md §6.1).",
    )
    parser.add_argument("--account-sid", required=True, help="AC + 32 hex")
    parser.add_argument("--api-key", required=True, help="API key SID, SK + 32 hex")
    add_secret_options(parser, "api-secret", API_SECRET_ENV, "API key secret")
    parser.add_argument("--identity", required=True, help="client name")
    parser.add_argument(
        "--ttl", type=int, default=3600, help="lifetime in seconds (max 86400)"
    )
    parser.add_argument(
        "--outgoing-app", metavar="AP_SID", help="TwiML app SID: allow outgoing calls"
    )
    parser.add_argument(
        "--no-incoming",
        action="store_true",
        help="do not allow incoming calls",
    )
    parser.add_argument("--region", help="home region (token header 'twr')")
    parser.set_defaults(handler=run_token)


def run_token(args: argparse.Namespace) -> int:
    """Handle ``appliance token``."""
    from appliance.exchange.config import validate_sid
    from appliance.tokens import MAX_LIFETIME_S, create_access_token

    try:
        account_sid = validate_sid(args.account_sid, "AC", "--account-sid")
        api_key = validate_sid(args.api_key, "SK", "--api-key")
        app_sid = (
            validate_sid(args.outgoing_app, "AP", "--outgoing-app")
            if args.outgoing_app is not None
            else None
        )
        api_secret = read_secret(
            args.api_secret_file, "--api-secret-file", API_SECRET_ENV
        )
        if api_secret is None:
            raise ConfigError(
                "--api-secret-file", f"required (or set ${API_SECRET_ENV})"
            )
        if not args.identity:
            raise ConfigError("--identity", "must not be empty")
        if not 0 < args.ttl <= MAX_LIFETIME_S:
            raise ConfigError("--ttl", f"must be between 1 and {MAX_LIFETIME_S}")
    except ConfigError as exc:
        return fail(str(exc))
    print(
        create_access_token(
            account_sid=account_sid,
            api_key_sid=api_key,
            api_secret=api_secret,
            identity=args.identity,
            ttl=args.ttl,
            now=time.time(),
            outgoing_application_sid=app_sid,
            incoming_allow=not args.no_incoming,
            region=args.region,
        )
    )
    return 0


# ------------------------------------------------------------------ exchange


def add_exchange_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance exchange``: run the local exchange until SIGINT/SIGTERM."""
    parser = subparsers.add_parser(
        "exchange",
        help="run the local exchange (gateway side of the signaling protocol)",
        description="Serve ws://HOST:PORT/signal. Prints 'exchange listening on "
        "ws://HOST:PORT/signal' once bound (the real port when PORT is 0).",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on (default "
        "127.0.0.1:0 unless the config file says otherwise)",
    )
    parser.add_argument("--account-sid", help="AC + 32 hex")
    parser.add_argument("--api-key", help="API key SID, SK + 32 hex")
    add_secret_options(
        parser, "api-secret", API_SECRET_ENV, "API key secret", " or --config"
    )
    add_secret_options(
        parser,
        "auth-token",
        AUTH_TOKEN_ENV,
        "account Auth Token (Capability Tokens)",
        " or --config",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file; with [[accounts]] it holds secrets and must be mode 0600",
    )
    parser.add_argument("--ring-timeout", type=float, metavar="S", help="default 30")
    parser.add_argument(
        "--heartbeat-interval", type=float, metavar="S", help="default 5 (< 15)"
    )
    parser.add_argument(
        "--idle-timeout", type=float, metavar="S", help="close silent sessions"
    )
    parser.add_argument(
        "--media-address",
        action="append",
        metavar="IP",
        help="address for echo media (repeatable; default 127.0.0.1 on loopback)",
    )
    add_log_level(parser, "INFO")
    parser.set_defaults(handler=run_exchange)


def run_exchange(args: argparse.Namespace) -> int:
    """Handle ``appliance exchange``."""
    from appliance.exchange.config import build_config

    try:
        # Secrets from the environment go with the account and key named on
        # the command line; a --config file carries its own.
        api_secret = (
            read_secret(args.api_secret_file, "--api-secret-file", API_SECRET_ENV)
            if args.api_key is not None or args.api_secret_file is not None
            else None
        )
        auth_token = (
            read_secret(args.auth_token_file, "--auth-token-file", AUTH_TOKEN_ENV)
            if args.account_sid is not None or args.auth_token_file is not None
            else None
        )
        config = build_config(
            config_file=args.config,
            listen=args.listen,
            account_sid=args.account_sid,
            api_key=args.api_key,
            api_secret=api_secret,
            auth_token=auth_token,
            ring_timeout=args.ring_timeout,
            heartbeat_interval=args.heartbeat_interval,
            idle_timeout=args.idle_timeout,
            media_addresses=tuple(args.media_address) if args.media_address else None,
        )
    except ConfigError as exc:
        return fail(str(exc))
    configure_logging(args.log_level)
    try:
        asyncio.run(_serve_exchange(config))
    except OSError as exc:
        print(f"appliance: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_exchange(config: ExchangeConfig) -> None:
    from appliance.exchange.server import ExchangeServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ExchangeServer(config) as server:
        print(f"exchange listening on {server.url}", flush=True)
        await stop.wait()
        logger.info("stopping")


# ---------------------------------------------------------------------- run


def add_run_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance run``: the phone service (systemd starts it at boot)."""
    parser = subparsers.add_parser(
        "run",
        help="run the phone service",
        description="Register with the token from phone.token_file (or "
        "$APPLIANCE_TOKEN) and run until SIGTERM. Config layers are read in "
        "order after the shipped defaults; a --config file must exist.",
    )
    add_layer_options(parser)
    parser.set_defaults(handler=run_run)


def add_layer_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (must exist) and ``--config-if-exists FILE`` layers."""
    parser.add_argument(
        "--config",
        action="append",
        dest="layers",
        type=lambda text: (Path(text), True),
        metavar="FILE",
        help="a TOML config layer (repeatable; default: /etc/appliance/"
        "appliance.toml then /var/lib/appliance/provisioned.toml, if they exist)",
    )
    parser.add_argument(
        "--config-if-exists",
        action="append",
        dest="layers",
        type=lambda text: (Path(text), False),
        metavar="FILE",
        help="a layer read only if the file exists (the provisioned one)",
    )


def load_layers(args: argparse.Namespace) -> AppConfig:
    """The configuration of :func:`add_layer_options`' layers.

    Raises:
        ConfigError: a ``--config`` file is missing, or what ``load_config``
            raises.
    """
    from appliance.config import load_config

    layers: list[tuple[Path, bool]] | None = args.layers
    for path, required in layers or ():
        if required and not path.exists():
            raise ConfigError("--config", f"{path}: no such file")
    return load_config(None if layers is None else [p for p, _ in layers])


def run_run(args: argparse.Namespace) -> int:
    """Handler of ``appliance run``."""
    from appliance import app

    try:
        config = load_layers(args)
    except ConfigError as exc:
        layers = None if args.layers is None else [p for p, _ in args.layers]
        return app.config_failed(layers, exc)  # stderr, and the OLED
    return app.main(config)  # configures logging at log.level


def add_show_config_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance show-config``: validate and print the merged configuration."""
    parser = subparsers.add_parser(
        "show-config",
        help="validate and print the merged configuration as TOML (secrets masked)",
        description="Read the layers as 'run' does, validate every section "
        "(exit 2 listing every problem, as 'run' would fail) and print the "
        "values in force as TOML, defaults included. The access token is never "
        "shown; TURN credentials read '********'.",
    )
    add_layer_options(parser)
    parser.set_defaults(handler=run_show_config)


def run_show_config(args: argparse.Namespace) -> int:
    """Handler of ``appliance show-config``."""
    from appliance.config import dump_config

    try:
        config = load_layers(args)
    except ConfigError as exc:
        return fail(str(exc))
    print(dump_config(config), end="")
    return 0


def add_check_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance check``: the hardware self-test (appliance/selftest/)."""
    parser = subparsers.add_parser(
        "check",
        help="hardware self-test: sound devices, LEDs, screen, keys and buttons",
        description="Play a tone on each playback device, record a second from "
        "each capture device and print its level, blink the LEDs, draw a test "
        "screen, then ask for each key and button in turn (Enter skips one, q "
        "the rest). Prints a summary; exit status 1 when a part failed.",
    )
    add_layer_options(parser)
    parser.add_argument(
        "--output",
        action="append",
        metavar="ID",
        help="test this playback device, e.g. alsa:plughw:CARD=Headset,DEV=0 "
        "(repeatable; default: each one ALSA lists)",
    )
    parser.add_argument(
        "--input", action="append", metavar="ID", help="the same for capture"
    )
    parser.add_argument(
        "--key-timeout", type=float, metavar="S", help="wait per key (default 10)"
    )
    add_log_level(parser, "WARNING")
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Handler of ``appliance check``."""
    try:
        config = load_layers(args)
        if args.key_timeout is not None and args.key_timeout <= 0:
            raise ConfigError("--key-timeout", "must be positive")
    except ConfigError as exc:
        return fail(str(exc))
    configure_logging(args.log_level)
    try:
        return asyncio.run(_check(args, config))
    except ConfigError as exc:  # the pin map
        return fail(str(exc))
    except KeyboardInterrupt:
        return 1


async def _check(args: argparse.Namespace, config: AppConfig) -> int:
    from appliance import app
    from appliance.selftest.runner import terminal_lines

    async with contextlib.AsyncExitStack() as stack:
        check = await app.open_check(
            config,
            stack,
            out=sys.stdout,
            outputs=args.output,
            inputs=args.input,
            key_timeout_s=args.key_timeout,
            commands=terminal_lines(sys.stdin.fileno()),
        )
        finished = await check.runner.run()
    return 0 if finished.passed else 1


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every command."""
    parser = argparse.ArgumentParser(
        prog="appliance", description="Desk-phone firmware and local exchange."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    add_run_parser(subparsers)
    add_show_config_parser(subparsers)
    add_token_parser(subparsers)
    add_exchange_parser(subparsers)
    add_provisioner_parser(subparsers)
    add_provision_parser(subparsers)
    add_release_parser(subparsers)
    add_update_parser(subparsers)
    installer.add_install_parser(subparsers)
    installer.add_uninstall_parser(subparsers)
    add_devices_parser(subparsers)
    add_check_parser(subparsers)
    add_web_password_parser(subparsers)
    # Development tools (the simulator, the demo, the JSON phone agent) live
    # in the appliance-devtools distribution, which is not installed on a
    # phone; installed, it adds its commands through this entry-point group.
    for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        add_parser: Callable[[_Subparsers], None] = entry.load()
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (2 for bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else 2
    # Every command logs by the one policy (appliance/log.py); commands with a
    # --log-level or a [log] section configure again with theirs.
    configure_logging(logging.WARNING)
    handler: Handler = args.handler
    return handler(args)
