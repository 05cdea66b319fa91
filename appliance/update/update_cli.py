"""``appliance update status|check|install|rollback``: the updater by hand.

``appliance update boot`` is the unit's boot check (:mod:`appliance.update.boot`).

Each command works on the persisted state (``var/lib/appliance/update`` under
``--root``), through the same machine and adapter as the service, holding
the updater's lock so that two updaters never act at once. ``install`` is
for a person at the phone: it does not wait for the phone to be idle, and
restarts the service with ``--restart-command`` once ``current`` points at
the new release; the service then runs the health check.
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
from appliance.update.machine import MAX_STARTS

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
    from appliance.update.machine import Policy, UpdatePolicy
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
    from appliance.update.machine import Phase

    with updater.state_file.lock():
        phase = updater.machine.state.phase
        resting = phase in (Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK)
        allowed = {
            "check": resting,
            "install": resting or phase in (Phase.VERIFIED, Phase.INSTALLED),
            "rollback": resting or phase is Phase.HEALTH_CHECK,
        }
        if not allowed[step]:
            raise ApplianceError(f"cannot {step} while {phase}")
        if step == "check":
            updater.check_now()
        elif step == "install":
            updater.install_now()
        elif step == "rollback":
            updater.rollback("rolled back by hand")
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
    try:
        updater = _updater(args)
        if args.update_command != "status":
            asyncio.run(_act(updater, args.update_command))
    except (ApplianceError, OSError, subprocess.SubprocessError) as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 1
    status = updater.status()
    releases = updater.releases
    print(f"phase: {status['phase']}")
    for key in ("current", "previous", "candidate", "reason"):
        if status[key]:
            print(f"{key}: {status[key]}")
    if status["refused"]:
        print("refused: " + ", ".join(status["refused"]))
    print(f"links: current -> {releases.current or '-'}, previous -> "
          f"{releases.previous or '-'}")  # fmt: skip
    return 1 if status["reason"].startswith("refused:") else 0
