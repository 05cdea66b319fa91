"""The ``[update]`` section of the service configuration, validated.

The section says where releases come from (``url``, ``trust_root``), when
they may be installed (``policy``, ``window``), how often to look
(``check_interval_s``) and where the phone keeps its releases and the
updater's state (``root``). With no ``url`` the service runs
no updater at all: a phone that was never pointed at a repository never
reaches for one. It goes through :mod:`appliance.schema` like every other
section, so one run reports every problem, each naming ``update.KEY``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.schema import Problems, register, structure
from appliance.update.policy import Policy, UpdatePolicy

__all__ = [
    "STATE_DIR",
    "UpdateConfig",
    "parse_update_config",
    "update_config_to_mapping",
]

#: The updater's state directory, relative to the phone's root.
STATE_DIR = "var/lib/appliance/update"

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _minutes(text: str) -> int:
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    return int(match.group(1)) * 60 + int(match.group(2))


def _window(value: Any) -> str:
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError("must read HH:MM-HH:MM, e.g. 02:00-05:00")
    start, end = (_minutes(part.strip()) for part in value.split("-"))
    if start == end:
        raise ValueError("start and end must differ")
    return value


def _policy(value: Any) -> str:
    choices = [str(p) for p in Policy]
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not (
        value == "" or value.startswith(("http://", "https://"))
    ):
        raise ValueError('must be an http:// or https:// URL, or "" (no updates)')
    return value.rstrip("/")


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a positive number, not {value!r}")
    return float(value)


def _not_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"must be a number of seconds, 0 or more, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class UpdateConfig:
    """``[update]``: keys and defaults as in ``default.toml``.

    Attributes:
        url: the repository's base URL; "" turns the updater off.
        policy: ``automatic``, ``window`` or ``manual``.
        window: the daily install window of ``window`` (local time).
        trust_root: the root metadata built into the image.
        check_interval_s: seconds between scheduled checks.
        idle_after_s: no key for this long before installing.
        health_timeout_s: a new release must be ready, registered and have
            opened its audio devices within this bound.
        stay_up_s: then stay up this long before it is committed (a start
            that ends sooner counts toward the starts on trial; 0: at once).
        root: the phone's file system root (``/``; a scratch tree in tests):
            releases live in ``ROOT/opt/appliance``, the updater's state,
            TUF's trusted metadata and downloads in
            ``ROOT/var/lib/appliance/update``, as for ``appliance update``.
        platform: the wheel platform tag to ask for ("" = this machine's).
    """

    url: str = ""
    policy: str = "automatic"
    window: str = "02:00-05:00"
    trust_root: str = "/etc/appliance/update-root.json"
    check_interval_s: float = 6 * 3600.0
    idle_after_s: float = 60.0
    health_timeout_s: float = 120.0
    stay_up_s: float = 60.0
    root: str = "/"
    platform: str = ""

    @property
    def enabled(self) -> bool:
        """Whether the service runs the updater (a repository is set)."""
        return bool(self.url)

    def machine_policy(self) -> UpdatePolicy:
        """What the pure machine decides by."""
        start, end = (_minutes(p.strip()) for p in self.window.split("-"))
        return UpdatePolicy(
            policy=Policy(self.policy),
            window=(start, end),
            check_interval_s=self.check_interval_s,
            idle_after_s=self.idle_after_s,
            health_timeout_s=self.health_timeout_s,
            stay_up_s=self.stay_up_s,
        )

    @property
    def state_dir(self) -> Path:
        """Where the updater keeps its state (below :attr:`root`)."""
        return Path(self.root) / STATE_DIR


register(
    UpdateConfig,
    {
        "url": _url,
        "policy": _policy,
        "window": _window,
        "check_interval_s": _positive,
        "idle_after_s": _positive,
        "health_timeout_s": _positive,
        "stay_up_s": _not_negative,
    },
)


def parse_update_config(raw: Mapping[str, Any], prefix: str = "update") -> UpdateConfig:
    """Validate the ``[update]`` table.

    Raises:
        ConfigError: every problem, each naming ``update.KEY``.
    """
    config = structure(raw, UpdateConfig, prefix)
    problems = Problems()
    if config.enabled and not config.trust_root:
        problems.add(f"{prefix}.trust_root", f"required when {prefix}.url is set")
    problems.check()
    return config


def update_config_to_mapping(config: UpdateConfig) -> dict[str, Any]:
    """``config`` as an ``[update]`` table that parses back to the same values."""
    return {
        "url": config.url,
        "policy": config.policy,
        "window": config.window,
        "trust_root": config.trust_root,
        "check_interval_s": config.check_interval_s,
        "idle_after_s": config.idle_after_s,
        "health_timeout_s": config.health_timeout_s,
        "stay_up_s": config.stay_up_s,
        "root": config.root,
        "platform": config.platform,
    }
