"""The boot check (``appliance update boot``) and the service's updater after it,
on a phone root against a real repository over local HTTP; and what the
panel shows in each phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.update.boot import BOOT_MARK, boot_check
from appliance.update.machine import (
    MAX_STARTS,
    START_LIMIT_BURST_MIN,
    Phase,
    UpdatePolicy,
    UpdateState,
)
from appliance.update.phone_updater import banner
from appliance.update.service import StateFile, Updater


def service(phone) -> Updater:
    """The service starting after the boot check (it finds the mark)."""

    async def restart() -> None:
        phone.restarts += 1

    updater = Updater(
        policy=phone.policy,
        source=phone.source(),
        releases=phone.releases,
        state_file=StateFile(phone.state_dir / "state.json"),
        running=phone.releases.current,
        restart=restart,
        clock=phone.clock,
        boot_mark=phone.state_dir / BOOT_MARK,
    )
    updater.start()
    return updater


async def switched_to_new_release(phone) -> None:
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    assert phone.releases.current == "1.1.0"


async def test_a_start_is_counted_once_and_the_trial_commits(phone):
    await switched_to_new_release(phone)
    assert "start 1 of 1.1.0" in boot_check(phone.root)
    assert (phone.state_dir / BOOT_MARK).exists()
    updater = service(phone)
    assert not (phone.state_dir / BOOT_MARK).exists()
    state = updater.machine.state
    assert (state.phase, state.starts) == (Phase.HEALTH_CHECK, 1)  # not 2
    for fact in ("ready", "registered", "audio"):
        updater.health(fact)
    await updater.run_once()
    assert updater.machine.state.phase is Phase.COMMITTED


async def test_a_release_that_dies_before_its_updater_runs_is_switched_back(phone):
    await switched_to_new_release(phone)
    # It crashes at import each time: only the boot check ever runs.
    for start in range(1, phone.policy.max_starts + 1):
        assert f"start {start} of 1.1.0" in boot_check(phone.root)
        assert phone.releases.current == "1.1.0"
    boot_check(phone.root)
    assert phone.releases.current == "1.0.0"
    state = service(phone).machine.state  # the old release's service
    assert state.phase is Phase.ROLLED_BACK
    assert state.reason == "1.1.0 restarted 3 times"
    assert state.refused == ("1.1.0",)
    assert phone.installed_version() == "1.0.0"


UNIT = Path(__file__).resolve().parents[2] / "systemd/appliance.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit file's settings (a key may repeat), continuation lines joined."""
    text = UNIT.read_text().replace("\\\n", " ")
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


async def test_a_crash_loop_ends_on_the_old_release_within_the_units_start_limit(
    phone,
):
    settings = unit_settings()
    (burst,) = settings["StartLimitBurst"]
    (boot,) = settings["ExecStartPre"]
    assert "update boot" in boot
    # The unit leaves the number of starts to the updater: one source.
    assert "--max-starts" not in boot
    assert UpdatePolicy().max_starts == MAX_STARTS
    assert int(burst) >= START_LIMIT_BURST_MIN

    await switched_to_new_release(phone)
    starts = 1  # the unit's start that installed and switched
    while phone.releases.current == "1.1.0":
        boot_check(phone.root)  # the unit starts again; the release dies
        starts += 1
        assert starts <= int(burst), "systemd would give up on the new release"
    assert phone.releases.current == "1.0.0"
    # The budget the constant is built from, and the margin left over.
    assert starts == MAX_STARTS + 2
    assert int(burst) - starts >= 2


def test_the_boot_check_of_a_phone_never_updated_changes_nothing(phone):
    assert boot_check(phone.root) == "idle, current -> 1.0.0"
    assert phone.releases.current == "1.0.0"


@pytest.mark.parametrize(
    ("phase", "shown"),
    [
        ("idle", None),
        ("checking", None),
        ("downloading", ("Downloading", "1.1.0", 0.5, "")),
        ("verified", None),  # waiting for the phone to be idle
        ("installing", ("Installing", "1.1.0", None, "")),
        ("switching", ("Restarting", "1.1.0", None, "")),
        ("restarting", ("Restarting", "1.1.0", None, "")),
        ("health-check", ("Starting", "1.1.0", None, "")),
        ("rolling-back", ("Rolling back", "", None, "why")),
        ("rolled-back", ("Rolled back", "", None, "why")),
        ("committed", None),
    ],
)
def test_what_the_panel_shows(phase, shown):
    state = UpdateState(phase=Phase(phase), candidate="1.1.0", reason="why")
    status = {**state.to_dict(), "progress": 0.5}
    assert banner(status) == shown
    if phase == "rolled-back":
        assert banner(status, dismissed=True) is None
