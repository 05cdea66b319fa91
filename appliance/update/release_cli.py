"""``appliance release init|add|timestamp|rotate``: publish to a TUF repository.

Run on the publishing machine, never on a phone. ``init`` once (it makes the
keys), ``add`` for each release, ``timestamp`` from cron at least daily (the
timestamp expires after a day by default, so phones notice a frozen
repository), ``rotate`` when an online key is lost or replaced (needs the
offline root keys). docs/updates.md walks through it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import ConfigError, UpdateError

if TYPE_CHECKING:  # the handlers import them: `appliance token` loads no crypto
    from appliance.update.artifact import Artifact
    from appliance.update.repository import StaticRepository

__all__ = ["add_release_parser", "channel_path", "publish_artifact"]


def channel_path(platform: str) -> str:
    """The target naming the newest release for ``platform`` (a signed pointer)."""
    return f"channels/{platform}/latest.json"


def publish_artifact(repo: StaticRepository, artifact: Artifact) -> None:
    """Add ``artifact`` and point its platform's channel at it.

    Refuses a version not newer than the channel's current one: phones
    would refuse it anyway (anti-rollback), better to say so here.
    """
    from appliance.update.machine import parse_version
    from appliance.update.repository import utc_now

    current = repo.targets().targets.get(channel_path(artifact.platform))
    if current is not None:
        old = str(current.custom["version"])
        if parse_version(artifact.version) <= parse_version(old):
            raise UpdateError(
                f"{artifact.version} is not newer than the published {old}"
            )
    custom = {"version": artifact.version, "platform": artifact.platform}
    with tempfile.TemporaryDirectory() as tmp:
        pointer = Path(tmp) / "latest.json"
        pointer.write_text(
            json.dumps({**custom, "target": artifact.target_path}, sort_keys=True)
        )
        repo.add_targets(
            {
                artifact.target_path: (
                    artifact.path,
                    {**custom, "manifest": artifact.manifest},
                ),
                channel_path(artifact.platform): (pointer, custom),
            },
            utc_now(),
        )


ROLES = ("root", "targets", "snapshot", "timestamp")
#: Days each role's metadata stays valid (the repository module's defaults).
EXPIRY_HELP = "root=365, targets=90, snapshot=30, timestamp=1"


def _role_numbers(items: list[str] | None, what: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items or []:
        role, sep, number = item.partition("=")
        if not sep or role not in ROLES or not number.isdigit():
            raise ConfigError(
                f"--{what}", f"{item!r}: expected ROLE=N, ROLE in {ROLES}"
            )
        found[role] = int(number)
    return found


def add_release_parser(subparsers: Any) -> None:
    """Add ``appliance release``: make and sign a TUF repository of releases."""
    parser = subparsers.add_parser(
        "release",
        help="publish phone releases to a TUF repository (static files)",
        description="Make a TUF repository, add releases to it, re-sign its "
        "timestamp. The repository directory is served as plain files.",
    )
    sub = parser.add_subparsers(dest="release_command", metavar="STEP")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", type=Path, required=True, help="repository directory")
        p.add_argument("--keys", type=Path, required=True, help="online key directory")

    init = sub.add_parser("init", help="make keys and the first metadata")
    common(init)
    init.add_argument(
        "--root-keys", type=Path, required=True, help="offline root key directory"
    )
    init.add_argument(
        "--threshold",
        action="append",
        metavar="ROLE=N",
        help="signatures needed for ROLE (that many keys are made; default 1)",
    )
    init.add_argument(
        "--expires",
        action="append",
        metavar="ROLE=DAYS",
        help=f"lifetime of ROLE's metadata (default {EXPIRY_HELP})",
    )
    init.set_defaults(handler=_run_init)

    add = sub.add_parser("add", help="build a release artifact and publish it")
    common(add)
    add.add_argument("--source", type=Path, default=Path(), help="the source tree")
    add.add_argument(
        "--with-dependencies",
        action="store_true",
        help="also pack the wheels of every dependency (.[hardware]) for this "
        "machine's platform; run it on (or emulating) the phone's architecture",
    )
    add.add_argument(
        "--wheel",
        type=Path,
        action="append",
        help="use these prebuilt wheels instead of building (repeatable)",
    )
    add.add_argument("--platform", help="platform label (default: any, or this host's)")
    add.set_defaults(handler=_run_add)

    stamp = sub.add_parser("timestamp", help="re-sign the timestamp (cron)")
    common(stamp)
    stamp.set_defaults(handler=_run_timestamp)

    rotate = sub.add_parser("rotate", help="replace the keys of an online role")
    common(rotate)
    rotate.add_argument("--root-keys", type=Path, required=True)
    rotate.add_argument("--role", required=True, choices=ROLES[1:])
    rotate.set_defaults(handler=_run_rotate)


def _fail(message: str) -> int:
    print(f"appliance: error: {message}", file=sys.stderr)
    return 2


def _run_init(args: argparse.Namespace) -> int:
    from appliance.update.repository import (
        DEFAULT_EXPIRY_DAYS,
        Keys,
        RepositoryPolicy,
        StaticRepository,
        utc_now,
    )

    try:
        thresholds = dict.fromkeys(ROLES, 1) | _role_numbers(
            args.threshold, "threshold"
        )
        expiry = dict(DEFAULT_EXPIRY_DAYS) | _role_numbers(args.expires, "expires")
        policy = RepositoryPolicy(thresholds, expiry)
        if args.root_keys.resolve() == args.keys.resolve():
            raise ConfigError("--root-keys", "must not be the online key directory")
        StaticRepository.init(
            args.repo, Keys(args.keys, args.root_keys), policy, utc_now()
        )
    except (ConfigError, UpdateError) as exc:
        return _fail(str(exc))
    print(
        f"repository made in {args.repo}; give phones {args.repo}/metadata/1.root.json"
    )
    return 0


def _run_add(args: argparse.Namespace) -> int:
    from appliance.update.artifact import build_artifact, build_wheels, host_platform
    from appliance.update.repository import Keys, StaticRepository

    repo = StaticRepository(args.repo, Keys(args.keys, None))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.wheel:
                wheels = list(args.wheel)
                complete = len(wheels) > 1
            else:
                wheels = build_wheels(
                    args.source,
                    Path(tmp) / "wheels",
                    with_dependencies=args.with_dependencies,
                )
                complete = args.with_dependencies
            platform = args.platform or (host_platform() if complete else "any")
            artifact = build_artifact(
                wheels, Path(tmp) / "out", complete=complete, platform=platform
            )
            publish_artifact(repo, artifact)
    except (ConfigError, UpdateError, OSError) as exc:
        return _fail(str(exc))
    print(f"published {artifact.target_path}")
    return 0


def _run_timestamp(args: argparse.Namespace) -> int:
    from appliance.update.repository import Keys, StaticRepository, utc_now

    try:
        StaticRepository(args.repo, Keys(args.keys, None)).timestamp(utc_now())
    except (ConfigError, UpdateError) as exc:
        return _fail(str(exc))
    return 0


def _run_rotate(args: argparse.Namespace) -> int:
    from appliance.update.repository import Keys, StaticRepository, utc_now

    try:
        repo = StaticRepository(args.repo, Keys(args.keys, args.root_keys))
        repo.rotate(args.role, utc_now())
    except (ConfigError, UpdateError) as exc:
        return _fail(str(exc))
    print(f"new {args.role} keys in force")
    return 0
