"""A configuration that stops the service, shown where a person sees it.

The person at the desk does not read the journal: when ``appliance run``
cannot start for a configuration error, the error also goes on the OLED, if
the ``[ui]`` section of the same layers is usable by itself. This path runs
when the rest of the configuration is not, so it is kept apart from the
service's wiring in :mod:`appliance.app`; the composition root still chooses
and opens the OLED and hands it in as ``open_oled``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError, HardwareError
from appliance.ui.settings import UiConfig

__all__ = ["config_failed", "exit_status", "show_config_error"]

logger = logging.getLogger(__name__)


def show_config_error(
    ui: UiConfig, error: ConfigError, open_oled: Callable[[], Any]
) -> bool:
    """Put a fatal configuration error on the OLED, if ``[ui]`` has one.

    The screen names the ``section.key`` at fault and stays lit after the
    service exits (luma's ``persist``), so the phone does not look merely
    dead. Blocking (I2C). ``open_oled`` opens the luma device ``ui`` names.

    Returns:
        Whether the error is on the screen (False: no panel, or no OLED).
    """
    from appliance.ui.notices import render_config_error

    if not ui.enabled:
        return False
    image = render_config_error(error.key, error.reason, len(error.problems) - 1)
    try:
        oled = open_oled()
        if tuple(oled.size) != image.size:
            raise HardwareError(f"the screen is {oled.size}, not {image.size}")
        oled.display(image)
    except (ConfigError, HardwareError, OSError) as exc:
        logger.error("the error is not shown on the display: %s", exc)
        return False
    oled.persist = True  # luma would blank the panel at exit
    return True


def config_failed(
    paths: Sequence[Path] | None,
    error: ConfigError,
    show: Callable[[UiConfig, ConfigError], bool],
) -> int:
    """``appliance run`` with a configuration that does not validate.

    Says so on stderr (the journal), then on the OLED (``show``) when the
    ``[ui]`` section of the same layers is usable by itself; when ``[ui]`` (or
    a whole file) is what is broken, the journal says that the screen was not
    used.

    Returns:
        2, the exit status systemd does not restart (RestartPreventExitStatus),
        or 1 when this release is an update on trial (:func:`exit_status`).
    """
    from appliance.config import merge_layers
    from appliance.ui.settings import parse_ui_config

    sys.stderr.write(f"appliance: error: {error}\n")
    merged: Mapping[str, Any] = {}
    try:
        merged, _sources = merge_layers(paths)
        raw = merged.get("ui", {})
        if not isinstance(raw, dict):
            raise ConfigError("ui", "must be a table")
        ui = parse_ui_config(raw, "ui")
    except ConfigError:
        sys.stderr.write(
            "appliance: the error is not shown on the display: "
            "the [ui] section cannot be used\n"
        )
    else:
        if ui.enabled and show(ui, error):
            sys.stderr.write("appliance: the error is shown on the display\n")
    return exit_status(merged)


def exit_status(merged: Mapping[str, Any]) -> int:
    """2 for a configuration a person must fix; 1 for a release on trial.

    2 stops the unit for good, which is right when the configuration is wrong
    and wrong when a new release refuses a configuration the previous one ran
    with: nothing would ever switch back. On trial the exit is 1, so systemd
    restarts the service, the boot check counts the start and, past its
    budget, switches back to the release that accepted it (docs/updates.md).
    """
    from appliance.update.boot import on_trial
    from appliance.update.settings import parse_update_config

    raw = merged.get("update", {})
    try:
        root = Path(parse_update_config(raw if isinstance(raw, dict) else {}).root)
    except ConfigError:
        root = Path("/")
    if not on_trial(root):
        return 2
    sys.stderr.write(
        "appliance: this release is an update on trial: exit 1, so that it is "
        "restarted and switched back\n"
    )
    return 1
