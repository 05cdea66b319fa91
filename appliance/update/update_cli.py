"""``appliance update status|check|install|rollback``: the updater by hand.

``appliance update boot`` is the unit's boot check (:mod:`appliance.update.boot`).

While the service runs, each command asks it over its control socket
(``--socket``; :mod:`appliance.update.control`): the service's own updater
carries the step out, with the service's repository and policy, and an
install still waits until the phone is idle. The command prints the steps
as they pass and returns once the service checked, switched and restarts,
or switched back.

With no service answering, each command works on the persisted state
(``var/lib/appliance/update`` under ``--root``) itself, through the same
machine and adapter as the service, holding the updater's lock so that two
updaters never act at once. ``install`` then does not wait for the phone to
be idle (nothing runs on it), and restarts the service with
``--restart-command`` once ``current`` points at the new release; the
service then runs the health check.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import ApplianceError
from appliance.system.control import DEFAULT_SOCKET
from appliance.update.policy import MAX_STARTS

if TYPE_CHECKING:
    from appliance.update.service import Updater

__all__ = ["add_update_parser"]

DEFAULT_RESTART = "systemctl restart appliance.service"


def add_update_parser(subparsers: Any) -> None:
    """Add ``appliance update``: status, check, install, rollback."""
    parser = subparsers.add_parser(
        "update",
        help="show, check for, install or roll back a release",
        description="Operate the phone's updater by hand (docs/updates.md).",
    )
    parser.add_argument("--root", type=Path, default=Path("/"), help="default /")
    parser.add_argument("--url", help="repository base URL (for check and install)")
    parser.add_argument(
        "--trust-root",
        type=Path,
        help="root metadata the phone trusts (default ROOT/etc/appliance/"
        "update-root.json)",
    )
    parser.add_argument("--platform", help="wheel platform tag (default: this host's)")
    parser.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        metavar="PATH",
        help=f"the running service's control socket (default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds without word from the running service before giving up "
        "(default 30; a step under way reports every few seconds)",
    )
    parser.add_argument(
        "--restart-command",
        default=DEFAULT_RESTART,
        help=f"how to restart the service (default: {DEFAULT_RESTART})",
    )
    sub = parser.add_subparsers(dest="update_command", metavar="STEP")
    sub.required = True
    for name, text in (
        ("status", "print the updater's state and the release links"),
        ("check", "check the repository now; print what is available"),
        ("install", "download, install and switch to the newest release now"),
        ("rollback", "switch back to the previous release now"),
    ):
        sub.add_parser(name, help=text).set_defaults(handler=_run)
    boot = sub.add_parser(
        "boot",
        help="before the service starts: count a start on trial, switch back "
        "a release that keeps failing (the unit's ExecStartPre)",
    )
    boot.add_argument(
        "--max-starts", type=int, default=MAX_STARTS, help=f"default {MAX_STARTS}"
    )
    boot.set_defaults(handler=_boot)


def _updater(args: argparse.Namespace) -> Updater:
    from appliance.update.artifact import host_platform
    from appliance.update.policy import Policy, UpdatePolicy
    from appliance.update.releases import Releases
    from appliance.update.service import StateFile, Updater
    from appliance.update.source import ReleaseSource

    root: Path = args.root
    state_dir = root / "var/lib/appliance/update"
    trust = args.trust_root or root / "etc/appliance/update-root.json"
    needs_repo = args.update_command in ("check", "install")
    if needs_repo and not args.url:
        raise ApplianceError("--url is needed to reach the repository")
    trust_root = trust.read_bytes() if needs_repo else b""
    releases = Releases(root)
    command = shlex.split(args.restart_command)

    async def restart() -> None:
        await asyncio.to_thread(subprocess.run, command, check=True, timeout=120)

    policy = Policy.AUTOMATIC if args.update_command == "install" else Policy.MANUAL
    return Updater(
        policy=UpdatePolicy(policy=policy),
        source=ReleaseSource(
            url=args.url or "http://127.0.0.1",
            trust_root=trust_root,
            state_dir=state_dir / "tuf",
            download_dir=state_dir / "downloads",
            platform=args.platform or host_platform(),
        ),
        releases=releases,
        state_file=StateFile(state_dir / "state.json"),
        running=releases.current,
        restart=restart,
    )


async def _act(updater: Updater, step: str) -> None:
    with updater.state_file.lock():
        updater.request(step)
        await updater.run_once()


def _boot(args: argparse.Namespace) -> int:
    from appliance.update.boot import boot_check

    try:
        print(f"update: {boot_check(args.root, max_starts=args.max_starts)}")
    except (ApplianceError, OSError) as exc:
        # Never keep the phone from starting: the service runs what `current`
        # names, and its own updater resumes without the mark.
        print(f"appliance: boot check failed: {exc}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from appliance.update.control import ask_service, status_of

    step = args.update_command
    try:
        status = ask_service(
            args.socket, step, timeout_s=args.timeout, on_line=_Progress()
        )
        if status is None:  # no service running an updater: act here
            updater = _updater(args)
            if step != "status":
                asyncio.run(_act(updater, step))
            status = status_of(updater)
    except (ApplianceError, OSError, subprocess.SubprocessError) as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 1
    print(f"phase: {status['phase']}")
    for key in ("current", "previous", "candidate", "reason"):
        if status[key]:
            print(f"{key}: {status[key]}")
    if status["refused"]:
        print("refused: " + ", ".join(status["refused"]))
    links = status["links"]
    print(f"links: current -> {links['current'] or '-'}, previous -> "
          f"{links['previous'] or '-'}")  # fmt: skip
    return 1 if str(status["reason"]).startswith("refused:") else 0


class _Progress:
    """Prints a step under way in the service: each phase, download tenths."""

    def __init__(self) -> None:
        self._shown: tuple[str, int] | None = None

    def __call__(self, status: dict[str, Any]) -> None:
        phase = str(status.get("phase"))
        tenth = int(float(status.get("progress") or 0.0) * 10)
        shown = (phase, tenth if phase == "downloading" else 0)
        if shown == self._shown:
            return
        self._shown = shown
        what = f"{phase} {status.get('candidate') or ''}".rstrip()
        if phase == "downloading":
            what += f" {tenth * 10}%"
        print(f"... {what}", flush=True)
