"""The ``[web]`` section of the service configuration, validated.

The page is on by default: a desk phone is expected to have one, and it is
harmless until its owner sets the password (no default password exists; the
first visit asks for one). ``enabled = false`` turns it off. It needs a
state directory for the password hash and its certificate: systemd's
StateDirectory on the phone, ``state_dir`` elsewhere; a service run by hand
without either serves no page (so a development shell or a test never takes
port 8443 by surprise). It goes through
:mod:`appliance.schema` like every other section, so one run reports every
problem, each naming ``web.KEY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.schema import register, structure

__all__ = ["WebConfig", "parse_web_config", "web_config_to_mapping"]


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise ValueError(f"must be a TCP port (0 picks a free one), not {value!r}")
    return value


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: keys and defaults as in ``default.toml``.

    Attributes:
        enabled: serve the page.
        address: where to listen ("" = every address of the phone).
        port: the HTTPS port (the service has no right to bind 443).
        state_dir: where the password hash and the TLS key and certificate
            are kept; "" uses the service's StateDirectory (systemd's
            ``STATE_DIRECTORY``), and without one (a development shell, a
            test) the page is not served.
    """

    enabled: bool = True
    address: str = ""
    port: int = 8443
    state_dir: str = ""

    def directory(self) -> Path | None:
        """The state directory, or None when there is nowhere to keep it."""
        if self.state_dir:
            return Path(self.state_dir)
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(state) if state else None


register(WebConfig, {"port": _port})


def parse_web_config(raw: Mapping[str, Any], prefix: str = "web") -> WebConfig:
    """Validate the ``[web]`` table.

    Raises:
        ConfigError: every problem, each naming ``web.KEY``.
    """
    return structure(raw, WebConfig, prefix)


def web_config_to_mapping(config: WebConfig) -> dict[str, Any]:
    """``config`` as a ``[web]`` table that parses back to the same values."""
    return {
        "enabled": config.enabled,
        "address": config.address,
        "port": config.port,
        "state_dir": config.state_dir,
    }
