"""The boot check (``appliance update boot``) and the service's updater after it,
on a phone root against a real repository over local HTTP; and what the
panel shows in each phase."""

from __future__ import annotations

import logging
import re
import signal
import time

import pytest

from appliance.errors import InvalidStateError
from appliance.update.artifact import build_artifact
from appliance.update.boot import BOOT_MARK, boot_check
from appliance.update.control import status_of
from appliance.update.machine import ActionKind, Phase, UpdateState
from appliance.update.phone_updater import RESTART_EXIT_STATUS, banner
from appliance.update.policy import MAX_STARTS, START_LIMIT_BURST_MIN, UpdatePolicy
from appliance.update.service import StateFile, Updater
from appliance_dev.unit_file import unit_settings
from tests.update.helpers import make_wheel
from tests.update.supervisor import unit_restarts


def service(phone, clock=None) -> Updater:
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
        clock=clock or phone.clock,
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


def with_history(phone, tmp_path) -> None:
    """1.0.0 was committed over 0.9.0, which is still on disk as `previous`."""
    wheel = make_wheel(tmp_path / "older", "0.9.0")
    artifact = build_artifact(
        [wheel], tmp_path / "older", complete=False, platform="any"
    )
    releases = phone.releases
    releases.install(artifact.path, "0.9.0")
    releases.link_previous("0.9.0")
    StateFile(phone.state_dir / "state.json").save(
        UpdateState(phase=Phase.COMMITTED, current="1.0.0", previous="0.9.0")
    )


def links_agree(updater: Updater) -> tuple[str, str]:
    """``appliance update status``: the state and the links say the same."""
    status = status_of(updater)
    links = status["links"]
    assert (status["current"], status["previous"]) == (
        links["current"],
        links["previous"],
    )
    return links["current"], links["previous"]


async def test_a_release_that_dies_before_its_updater_runs_is_switched_back(
    phone, tmp_path
):
    with_history(phone, tmp_path)
    await switched_to_new_release(phone)
    assert phone.releases.previous == "1.0.0"  # during the trial
    # It crashes at import each time: only the boot check ever runs.
    for start in range(1, phone.policy.max_starts + 1):
        assert f"start {start} of 1.1.0" in boot_check(phone.root)
        assert phone.releases.current == "1.1.0"
    boot_check(phone.root)
    assert phone.releases.current == "1.0.0"
    updater = service(phone)  # the old release's service
    state = updater.machine.state
    assert state.phase is Phase.ROLLED_BACK
    assert state.reason == "1.1.0 restarted 3 times"
    assert state.refused == ("1.1.0",)
    assert phone.installed_version() == "1.0.0"
    # Both links as before the update: the failed release is not `previous`.
    assert links_agree(updater) == ("1.0.0", "0.9.0")


async def on_trial_of_new_release(phone) -> Updater:
    await switched_to_new_release(phone)
    boot_check(phone.root)
    return service(phone)


async def test_a_release_that_dies_while_it_must_stay_up_is_switched_back_saying_so(
    phone, tmp_path, caplog
):
    phone.policy = UpdatePolicy(stay_up_s=60.0)
    with_history(phone, tmp_path)
    await switched_to_new_release(phone)
    for start in range(1, phone.policy.max_starts + 1):
        assert f"start {start} of 1.1.0" in boot_check(phone.root)
        # The service reads the boot check's clock, as on the phone.
        updater = service(phone, clock=time.monotonic)
        for fact in ("ready", "registered", "audio"):
            updater.health(fact)
        assert updater.machine.staying_up
        # ... and dies before it stayed up: what it wrote is what is left.
    caplog.set_level(logging.WARNING, logger="appliance.update.boot")
    boot_check(phone.root)
    assert phone.releases.current == "1.0.0"
    updater = service(phone)
    assert updater.machine.state.phase is Phase.ROLLED_BACK
    reason = status_of(updater)["reason"]  # what `appliance update status` prints
    assert re.fullmatch(
        r"1\.1\.0 stopped within \d+ s of passing its health checks, "
        r"before it had stayed up 60 s \(restarted 3 times\)",
        reason,
    ), reason
    assert f"switching back to 1.0.0: {reason}" in caplog.text  # the journal
    assert links_agree(updater) == ("1.0.0", "0.9.0")


async def test_a_failed_health_check_puts_previous_back(phone, tmp_path):
    with_history(phone, tmp_path)
    updater = await on_trial_of_new_release(phone)
    updater.health_failed("cannot open audio: no sound card")
    await updater.run_once()
    assert phone.restarts == 2  # into 1.1.0, then back
    boot_check(phone.root)
    updater = service(phone)
    assert updater.machine.state.phase is Phase.ROLLED_BACK
    assert links_agree(updater) == ("1.0.0", "0.9.0")
    # A later rollback by hand goes further back, never to 1.1.0.
    updater.rollback("rolled back by hand")
    await updater.run_once()
    boot_check(phone.root)
    assert links_agree(service(phone)) == ("0.9.0", "1.0.0")


async def test_a_failed_first_update_leaves_nothing_to_roll_back_to(phone):
    updater = await on_trial_of_new_release(phone)
    updater.health_failed("cannot open audio: no sound card")
    await updater.run_once()
    boot_check(phone.root)
    updater = service(phone)
    assert links_agree(updater) == ("1.0.0", "")
    with pytest.raises(InvalidStateError, match="no previous release"):
        updater.request("rollback")


async def committed_on_new_release(phone) -> None:
    updater = await on_trial_of_new_release(phone)
    for fact in ("ready", "registered", "audio"):
        updater.health(fact)
    await updater.run_once()
    assert links_agree(updater) == ("1.1.0", "1.0.0")


@pytest.mark.parametrize("done", [0, 1, 2])
async def test_a_rollback_by_hand_cut_at_any_step_swaps_the_links(phone, done):
    """The power is cut after the state is written and ``done`` of the
    rollback's steps are carried out; the unit starts again."""
    await committed_on_new_release(phone)
    updater = service(phone)
    updater.rollback("rolled back by hand")
    actions = updater.machine.actions()
    assert [a.kind for a in actions] == [
        ActionKind.LINK_PREVIOUS,
        ActionKind.SWITCH_BACK,
        ActionKind.RESTART,
    ]
    for action in actions[:done]:
        if action.kind is ActionKind.LINK_PREVIOUS:
            phone.releases.link_previous(action.version)
        else:
            phone.releases.switch_back(action.version)
    boot_check(phone.root)
    updater = service(phone)
    await updater.run_once()
    assert updater.machine.state.phase is Phase.ROLLED_BACK
    assert links_agree(updater) == ("1.0.0", "1.1.0")
    assert phone.installed_version() == "1.0.0"
    # 1.1.0 passed its health check: a second rollback undoes the first.
    updater.request("rollback")
    await updater.run_once()
    boot_check(phone.root)
    updater = service(phone)
    assert links_agree(updater) == ("1.1.0", "1.0.0")
    assert phone.installed_version() == "1.1.0"


def test_the_unit_starts_the_service_again_after_any_exit_but_a_config_error():
    # A release on trial that ends by itself, even cleanly, must start again
    # for the boot check to count it and switch back.
    clean = (0, -signal.SIGTERM, -signal.SIGHUP)
    crashes = (1, -signal.SIGKILL, -signal.SIGABRT)  # SIGABRT: the watchdog
    for status in (*clean, *crashes, RESTART_EXIT_STATUS):
        assert unit_restarts(status), status
    assert not unit_restarts(2)  # a configuration error stops the unit


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
    # The budget the constant is built from, and the margin left over: the
    # same for a release that exits cleanly at each start (Restart=always).
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


def test_the_panel_shows_nothing_once_the_release_on_trial_is_healthy():
    # The phone works; it only waits to have stayed up before the commit.
    state = UpdateState(phase=Phase.HEALTH_CHECK, candidate="1.1.0")
    status = {**state.to_dict(), "progress": 0.0, "staying_up": True}
    assert banner(status) is None
    assert banner({**status, "staying_up": False}) == ("Starting", "1.1.0", None, "")
