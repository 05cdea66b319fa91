"""The updater's state machine, synchronously: no loop, no clock, no disk.

The last tests simulate a phone (a ``current`` link, a service that starts,
crashes or stays silent) and cut the power at every step of an update: each
run must end on a release that works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from appliance.errors import ConfigError, InvalidStateError
from appliance.update.machine import (
    _TRANSITIONS,
    Action,
    ActionKind,
    Input,
    Phase,
    UpdateMachine,
    UpdateState,
    parse_version,
)
from appliance.update.policy import Policy, UpdatePolicy

A = ActionKind
NOON = 12 * 60


def machine(policy=Policy.AUTOMATIC, **state) -> UpdateMachine:
    m = UpdateMachine(
        UpdatePolicy(policy=policy, window=(120, 300)),
        UpdateState(**({"current": "1.0.0"} | state)),
    )
    m.resume(0.0, m.state.current)
    return m


def to_verified(m: UpdateMachine, now: float = 0.0) -> None:
    m.check_requested(now)
    assert m.actions() == [Action(A.CHECK)]
    m.check_done("1.1.0")
    assert m.actions() == [Action(A.DOWNLOAD, "1.1.0")]


# ------------------------------------------------------------------ the table


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(Input))
def test_every_phase_and_input_is_in_the_table_or_refused(phase, event):
    m = UpdateMachine(UpdatePolicy(), UpdateState(phase=phase, current="1.0.0"))
    if (phase, event) in _TRANSITIONS:
        m._go(event)
        assert m.state.phase is _TRANSITIONS[(phase, event)]
    else:
        with pytest.raises(InvalidStateError, match=f"cannot {event} while {phase}"):
            m._go(event)


def test_an_update_goes_through_every_phase_to_committed():
    m = machine()
    to_verified(m)
    assert m.state.phase is Phase.DOWNLOADING
    m.download_progress(0.5)
    assert m.progress == 0.5
    m.downloaded(61.0, NOON)  # idle: nothing pressed since start
    assert m.state.phase is Phase.INSTALLING
    assert m.actions() == [Action(A.INSTALL, "1.1.0")]
    m.installed(62.0, NOON)
    assert m.actions() == [Action(A.SWITCH, "1.1.0")]
    m.switched()
    assert m.state.phase is Phase.RESTARTING
    assert m.actions() == [Action(A.RESTART)]
    # the new process
    m2 = UpdateMachine(m.policy, m.state)
    m2.resume(0.0, "1.1.0")
    assert m2.state.phase is Phase.HEALTH_CHECK
    assert m2.next_deadline() == 120.0  # no check during the trial
    for fact in ("ready", "registered"):
        m2.health(1.0, fact)
        assert m2.state.phase is Phase.HEALTH_CHECK
    m2.health(2.0, "audio")
    assert m2.state.phase is Phase.HEALTH_CHECK  # and now stays up 60 s
    assert m2.next_deadline() == 62.0
    m2.tick(62.0, NOON)
    assert m2.state.phase is Phase.COMMITTED
    assert (m2.state.current, m2.state.previous) == ("1.1.0", "1.0.0")
    assert m2.actions() == [Action(A.COMMIT, "1.1.0")]


def test_nothing_newer_goes_back_to_idle():
    for available in (None, "1.0.0", "0.9.9"):
        m = machine()
        m.check_requested(0.0)
        m.check_done(available)
        assert m.state.phase is Phase.IDLE
        assert m.actions() == [Action(A.CHECK)]


def test_a_failure_gives_up_with_the_reason():
    m = machine()
    to_verified(m)
    m.failed("target hash mismatch")
    assert m.state.phase is Phase.IDLE
    assert m.state.reason == "target hash mismatch"
    assert m.state.candidate == ""


def test_checks_follow_the_schedule_and_not_during_an_update():
    m = machine()
    assert m.next_deadline() == 0.0
    m.tick(0.0, NOON)
    assert m.actions() == [Action(A.CHECK)]
    m.check_done(None)
    assert m.next_deadline() == 6 * 3600.0
    m.tick(6 * 3600.0, NOON)
    assert m.actions() == [Action(A.CHECK)]
    m.check_done("1.1.0")
    m.actions()
    m.check_requested(6 * 3600.0 + 1)  # downloading: ignored
    assert m.actions() == []


# ------------------------------------------------------------ never in a call

IDLE_CASES = [
    # busy, seconds since last key, policy, minute of day, requested -> installs
    (False, None, Policy.AUTOMATIC, NOON, False, True),
    (True, None, Policy.AUTOMATIC, NOON, False, False),
    (False, 59.0, Policy.AUTOMATIC, NOON, False, False),
    (False, 60.0, Policy.AUTOMATIC, NOON, False, True),
    (False, None, Policy.WINDOW, NOON, False, False),
    (False, None, Policy.WINDOW, 150, False, True),
    (True, None, Policy.WINDOW, 150, False, False),
    (False, None, Policy.WINDOW, NOON, True, True),  # `update install` now
    (False, None, Policy.MANUAL, NOON, True, True),
    (True, None, Policy.MANUAL, NOON, True, False),
]


@pytest.mark.parametrize(
    ("busy", "since_key", "policy", "minute", "requested", "installs"), IDLE_CASES
)
def test_install_waits_for_an_idle_phone_and_the_policy(
    busy, since_key, policy, minute, requested, installs
):
    m = machine(policy)
    if requested:
        m.install_requested(0.0)
    else:
        m.check_requested(0.0)
    m.check_done("1.1.0")
    m.actions()
    now = 1000.0
    if since_key is not None:
        m.key_pressed(now - since_key)
    m.phone_busy(busy)
    m.downloaded(now, minute)
    assert (m.state.phase is Phase.INSTALLING) is installs
    assert (Action(A.INSTALL, "1.1.0") in m.actions()) is installs


def test_a_call_during_download_is_not_disturbed_and_install_follows_later():
    m = machine()
    to_verified(m)
    m.phone_busy(True)  # incoming call while downloading
    m.downloaded(10.0, NOON)
    assert m.state.phase is Phase.VERIFIED
    assert m.actions() == []
    m.phone_busy(False)
    m.key_pressed(100.0)  # hung up
    m.tick(130.0, NOON)
    assert m.actions() == []
    assert m.next_deadline() == 190.0
    m.tick(160.0, NOON)
    assert m.actions() == [Action(A.INSTALL, "1.1.0")]


def test_a_call_during_install_delays_the_switch():
    m = machine()
    to_verified(m)
    m.downloaded(100.0, NOON)
    m.actions()
    m.phone_busy(True)
    m.installed(101.0, NOON)
    assert m.state.phase is Phase.INSTALLED
    assert m.actions() == []
    m.tick(161.0, NOON)
    assert m.actions() == []
    m.phone_busy(False)
    m.tick(221.0, NOON)
    assert m.actions() == [Action(A.SWITCH, "1.1.0")]


def test_resumed_while_waiting_it_looks_at_once_then_each_minute():
    m = UpdateMachine(
        UpdatePolicy(),
        UpdateState(phase=Phase.VERIFIED, current="1.0.0", candidate="1.1.0"),
    )
    m.resume(500.0, "1.0.0")
    assert m.next_deadline() == 500.0  # not the scheduled check: no update then
    m.phone_busy(True)
    m.tick(500.0, NOON)
    assert m.actions() == []
    assert m.next_deadline() == 560.0  # not a check due in the past: no busy loop
    m.phone_busy(False)
    m.tick(510.0, NOON)
    assert m.actions() == [Action(A.INSTALL, "1.1.0")]


def test_manual_policy_only_shows_what_is_available():
    m = machine(Policy.MANUAL)
    m.check_requested(0.0)
    m.check_done("1.1.0")
    assert m.state.phase is Phase.IDLE
    assert m.state.reason == "1.1.0 available"
    m.install_requested(1.0)
    assert m.actions() == [Action(A.CHECK), Action(A.CHECK)]
    m.check_done("1.1.0")
    assert m.actions() == [Action(A.DOWNLOAD, "1.1.0")]


def test_window_wraps_past_midnight():
    policy = UpdatePolicy(policy=Policy.WINDOW, window=(22 * 60, 5 * 60))
    assert policy.in_window(23 * 60)
    assert policy.in_window(60)
    assert not policy.in_window(NOON)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": (10, 10)},
        {"window": (0, 1440)},
        {"max_starts": 0},
        {"health_timeout_s": 0},
        {"stay_up_s": -1.0},
    ],
)
def test_bad_policy_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        UpdatePolicy(**kwargs)


def test_versions_are_release_numbers():
    assert parse_version("1.10.0") > parse_version("1.9.9")
    for bad in ("1.0rc1", "v1", "", "1.0.0+local"):
        with pytest.raises(ConfigError):
            parse_version(bad)


# --------------------------------------------------------- health and rollback


def on_trial(**policy) -> UpdateMachine:
    """1.1.0 on trial; 1.0.0 committed, after 0.9.0."""
    m = UpdateMachine(
        UpdatePolicy(**policy),
        UpdateState(
            phase=Phase.RESTARTING,
            current="1.0.0",
            previous="0.9.0",
            candidate="1.1.0",
        ),
    )
    m.resume(0.0, "1.1.0")
    assert m.state.phase is Phase.HEALTH_CHECK
    return m


def test_no_registration_within_the_bound_rolls_back_with_the_reason():
    m = on_trial(health_timeout_s=90.0)
    m.health(1.0, "ready")
    m.health(2.0, "audio")
    m.tick(89.0, NOON)
    assert m.state.phase is Phase.HEALTH_CHECK
    m.tick(90.0, NOON)
    assert m.state.phase is Phase.ROLLING_BACK
    assert m.state.reason == "not registered within the health check"
    # `previous` goes back to what it named before the switch, first.
    assert m.actions() == [
        Action(A.LINK_PREVIOUS, "0.9.0"),
        Action(A.SWITCH_BACK, "1.0.0"),
        Action(A.RESTART),
    ]
    m2 = UpdateMachine(m.policy, m.state)
    m2.resume(0.0, "1.0.0")
    assert m2.state.phase is Phase.ROLLED_BACK
    assert (m2.state.current, m2.state.previous) == ("1.0.0", "0.9.0")
    assert m2.state.refused == ("1.1.0",)
    assert m2.state.reason == "not registered within the health check"
    assert m2.actions() == []
    # A rollback by hand now goes further back, never to the failed release.
    m2.rollback_requested("by hand")
    assert [a.version for a in m2.actions()] == ["1.0.0", "0.9.0", ""]


def healthy(m: UpdateMachine, now: float) -> None:
    for fact in ("ready", "registered", "audio"):
        m.health(now, fact)


# stay_up_s, the health facts at, then what happens at which time -> phase
STAY_UP_CASES = [
    (60.0, 5.0, "tick", 64.9, Phase.HEALTH_CHECK),
    (60.0, 5.0, "tick", 65.0, Phase.COMMITTED),
    # past the health bound (90 s) but the facts were in: it only has to stay up
    (120.0, 80.0, "tick", 199.0, Phase.HEALTH_CHECK),
    (120.0, 80.0, "tick", 200.0, Phase.COMMITTED),
    (60.0, 5.0, "facts-again", 30.0, Phase.HEALTH_CHECK),  # not re-armed
    (60.0, 5.0, "no-audio", 30.0, Phase.ROLLING_BACK),
    (60.0, 5.0, "rollback", 30.0, Phase.ROLLING_BACK),
    (60.0, 5.0, "restarted", 30.0, Phase.HEALTH_CHECK),  # crashed; start 2 of 2
    (0.0, 5.0, "nothing", 5.0, Phase.COMMITTED),  # 0: at once
]


@pytest.mark.parametrize(("stay_up", "facts_at", "what", "at", "phase"), STAY_UP_CASES)
def test_a_healthy_release_is_committed_only_once_it_stayed_up(
    stay_up, facts_at, what, at, phase
):
    m = on_trial(health_timeout_s=90.0, stay_up_s=stay_up, max_starts=2)
    healthy(m, facts_at)
    assert m.staying_up is (stay_up > 0)
    if stay_up:
        assert m.state.phase is Phase.HEALTH_CHECK
        assert m.actions() == []
        assert m.next_deadline() == facts_at + stay_up
    if what == "tick":
        m.tick(at, NOON)
    elif what == "facts-again":
        healthy(m, at)
        assert m.next_deadline() == facts_at + stay_up
        m.tick(facts_at + stay_up, NOON)  # the first deadline holds
        assert m.state.phase is Phase.COMMITTED
        return
    elif what == "no-audio":
        m.health_failed("cannot open audio: gone")
    elif what == "rollback":
        m.rollback_requested("by hand")
    elif what == "restarted":
        m = UpdateMachine(m.policy, m.state)
        m.resume(at, "1.1.0")
        assert not m.staying_up  # the facts again, then stay up again
        assert m.state.starts == 2
        assert m.next_deadline() == at + 90.0
    assert m.state.phase is phase
    if phase is Phase.COMMITTED:
        assert m.actions() == [Action(A.COMMIT, "1.1.0")]
        assert (m.state.current, m.state.previous) == ("1.1.0", "1.0.0")
        assert not m.staying_up and m.next_deadline() == 0.0  # the check is due
    elif phase is Phase.ROLLING_BACK:
        assert not m.staying_up
        assert m.actions()[1] == Action(A.SWITCH_BACK, "1.0.0")


def stopped(when: str) -> str:
    return (
        f"1.1.0 stopped {when} passing its health checks, "
        "before it had stayed up 60 s (restarted 3 times)"
    )


# Each start is healthy at 10 s (the last: `last`), then gone (a crash, or the
# power cut) before it stayed up; the next start comes at `again` -> reason.
STAY_UP_FAILURES = [
    (13.0, "healthy", stopped("within 3 s of")),
    (69.5, "healthy", stopped("within 60 s of")),
    (10.0, "healthy", stopped("within 1 s of")),
    # a power cut: the clock of the new boot started again, no figure
    (4.0, "healthy", stopped("after")),
    # the last start died before its checks: a start failure
    (13.0, "ready", "1.1.0 restarted 3 times"),
]


@pytest.mark.parametrize(("again", "last", "reason"), STAY_UP_FAILURES)
def test_a_release_that_dies_before_it_stayed_up_uses_up_its_starts(
    again, last, reason
):
    # Every start counts, and past max_starts it is switched back, saying why.
    m = on_trial(stay_up_s=60.0, max_starts=3)
    for start in (2, 3, 4):  # the one gone is start - 1
        if start < 4 or last == "healthy":
            healthy(m, 10.0)
        else:
            m.health(10.0, "ready")
        m.tick(10.0 + 59.0, NOON)
        assert m.state.phase is Phase.HEALTH_CHECK
        m = UpdateMachine(m.policy, m.state)  # the process is gone
        m.resume(again, "1.1.0")
        assert m.state.starts == start
    assert m.state.phase is Phase.ROLLING_BACK
    assert m.state.reason == reason
    assert m.actions() == [
        Action(A.LINK_PREVIOUS, "0.9.0"),
        Action(A.SWITCH_BACK, "1.0.0"),
        Action(A.RESTART),
    ]
    m.resume(again + 1.0, "1.0.0")  # back on the committed release
    assert (m.state.phase, m.state.reason) == (Phase.ROLLED_BACK, reason)


def test_the_stay_up_record_is_kept_only_while_the_release_must_stay_up():
    m = on_trial(stay_up_s=60.0)
    assert (m.state.checked_at, m.state.stay_up_until) == (None, None)
    healthy(m, 10.0)
    saved = UpdateState.from_dict(json.loads(json.dumps(m.state.to_dict())))
    assert (saved.checked_at, saved.stay_up_until) == (10.0, 70.0)
    m2 = UpdateMachine(m.policy, saved)
    m2.resume(12.0, "1.1.0")  # started again: the record is read, then gone
    assert (m2.state.checked_at, m2.state.stay_up_until) == (None, None)
    m.tick(70.0, NOON)  # stayed up: committed
    assert m.state.phase is Phase.COMMITTED
    assert (m.state.checked_at, m.state.stay_up_until) == (None, None)
    m = on_trial(stay_up_s=60.0)
    healthy(m, 10.0)
    m.health_failed("cannot open audio: gone")  # failed while staying up
    assert m.state.phase is Phase.ROLLING_BACK
    assert m.state.reason == "cannot open audio: gone"
    assert (m.state.checked_at, m.state.stay_up_until) == (None, None)
    m = on_trial(stay_up_s=60.0)
    healthy(m, 10.0)
    m.resume(12.0, "1.0.0")  # switched back by hand while it had to stay up
    assert m.state.phase is Phase.ROLLED_BACK
    assert (m.state.checked_at, m.state.stay_up_until) == (None, None)


def test_a_power_cut_while_staying_up_starts_the_trial_again():
    m = on_trial(stay_up_s=60.0)
    healthy(m, 10.0)
    m.tick(50.0, NOON)
    saved = UpdateState.from_dict(json.loads(json.dumps(m.state.to_dict())))
    assert saved.phase is Phase.HEALTH_CHECK  # what is on disk: not committed
    m = UpdateMachine(m.policy, saved)
    m.resume(0.0, "1.1.0")  # power back, on the release on trial
    assert (m.state.phase, m.state.starts, m.staying_up) == (
        Phase.HEALTH_CHECK,
        2,
        False,
    )
    m.tick(59.0, NOON)  # the old stay-up deadline is gone with the process
    assert m.state.phase is Phase.HEALTH_CHECK
    healthy(m, 20.0)
    m.tick(80.0, NOON)
    assert m.state.phase is Phase.COMMITTED
    assert m.state.starts == 0


def test_a_trial_failed_on_the_first_update_leaves_no_previous():
    m = UpdateMachine(
        UpdatePolicy(),
        UpdateState(phase=Phase.RESTARTING, current="1.0.0", candidate="1.1.0"),
    )
    m.resume(0.0, "1.1.0")
    m.health_failed("cannot open audio")
    assert m.actions()[0] == Action(A.LINK_PREVIOUS, "")
    m.resume(0.0, "1.0.0")
    assert (m.state.current, m.state.previous) == ("1.0.0", "")
    with pytest.raises(InvalidStateError, match="no previous release"):
        m.rollback_requested("by hand")


def test_a_crash_loop_on_trial_rolls_back():
    m = on_trial(max_starts=2)
    m = UpdateMachine(m.policy, m.state)
    m.resume(0.0, "1.1.0")  # second start
    assert m.state.phase is Phase.HEALTH_CHECK
    m = UpdateMachine(m.policy, m.state)
    m.resume(0.0, "1.1.0")  # third start
    assert m.state.phase is Phase.ROLLING_BACK
    assert m.state.reason == "1.1.0 restarted 2 times"


def test_a_refused_version_is_not_installed_again_by_itself():
    m = machine(refused=("1.1.0",))
    m.check_requested(0.0)
    m.check_done("1.1.0")
    assert m.state.phase is Phase.IDLE
    m.install_requested(1.0)
    m.actions()
    m.check_done("1.1.0")
    assert m.actions() == [Action(A.DOWNLOAD, "1.1.0")]


def test_manual_rollback_goes_to_the_previous_release_and_can_be_undone():
    m = machine(phase=Phase.COMMITTED, current="1.1.0", previous="1.0.0")
    m.rollback_requested("by hand")
    # 1.1.0 passed its health check: it becomes `previous`.
    assert m.actions() == [
        Action(A.LINK_PREVIOUS, "1.1.0"),
        Action(A.SWITCH_BACK, "1.0.0"),
        Action(A.RESTART),
    ]
    m2 = UpdateMachine(m.policy, m.state)
    m2.resume(0.0, "1.0.0")
    assert m2.state.phase is Phase.ROLLED_BACK
    assert (m2.state.current, m2.state.previous) == ("1.0.0", "1.1.0")
    assert m2.state.refused == ("1.1.0",)  # not installed again by itself
    m2.rollback_requested("again")
    assert [a.version for a in m2.actions()] == ["1.0.0", "1.1.0", ""]
    m2.resume(0.0, "1.1.0")
    assert (m2.state.current, m2.state.previous) == ("1.1.0", "1.0.0")
    assert m2.state.refused == ("1.0.0",)


def test_a_rollback_asked_for_during_the_trial_fails_the_trial():
    m = on_trial()
    m.rollback_requested("by hand")
    assert m.state.phase is Phase.ROLLING_BACK
    assert m.actions()[:2] == [
        Action(A.LINK_PREVIOUS, "0.9.0"),
        Action(A.SWITCH_BACK, "1.0.0"),
    ]


def test_a_release_switched_away_from_by_hand_during_the_trial():
    # `current` put back to 1.0.0 by hand while 1.1.0 was on trial.
    m = on_trial()
    m.resume(0.0, "1.0.0")
    assert m.state.phase is Phase.ROLLED_BACK
    assert (m.state.current, m.state.previous) == ("1.0.0", "0.9.0")
    assert m.actions() == [Action(A.LINK_PREVIOUS, "0.9.0")]


def test_health_facts_are_named():
    m = on_trial()
    with pytest.raises(ValueError, match="unknown health fact"):
        m.health(0.0, "happy")


def test_state_is_plain_data():
    state = UpdateState(phase=Phase.HEALTH_CHECK, current="1", refused=("2",))
    text = json.dumps(state.to_dict())
    assert UpdateState.from_dict(json.loads(text)) == state
    assert UpdateState.from_dict({"phase": "idle", "future": 1}) == UpdateState()


# ------------------------------------------- power cuts at every step, simulated


@dataclass
class Phone:
    """The disk (state file, `current` link) and a service with a behaviour."""

    #: version -> "good" | "crash" | "silent" | "no-audio" | "dies-later"
    behaviour: dict[str, str]
    link: str = "1.0.0"
    previous: str = "0.9.0"  # the `previous` link
    saved: dict = field(
        default_factory=lambda: UpdateState(current="1.0.0", previous="0.9.0").to_dict()
    )
    installed: set[str] = field(default_factory=lambda: {"0.9.0", "1.0.0"})
    steps: int = 0

    def link_previous(self, version: str) -> None:
        self.previous = version if version in self.installed else ""

    def agrees(self, m: UpdateMachine) -> None:
        """At rest, the links are what the state says."""
        assert (self.link, self.previous) == (m.state.current, m.state.previous)

    def boot(self, now: float) -> UpdateMachine:
        """Start the service from `current`, after the boot check.

        The boot check (run before the service, from the committed release)
        resumes the machine and carries out a switch back at once: a release
        that crashes at start cannot roll itself back.
        """
        while True:
            m = UpdateMachine(
                UpdatePolicy(health_timeout_s=90.0, max_starts=2),
                UpdateState.from_dict(self.saved),
            )
            m.resume(now, self.link)
            self.saved = m.state.to_dict()
            actions = m.actions()
            for action in actions:
                if action.kind is A.LINK_PREVIOUS:
                    self.link_previous(action.version)
            if m.state.phase is not Phase.ROLLING_BACK:
                return m
            (link, back, restart) = actions
            assert (link.kind, back.kind, restart.kind) == (
                A.LINK_PREVIOUS,
                A.SWITCH_BACK,
                A.RESTART,
            )
            self.link = back.version


def run_update(phone: Phone, cut_at: int | None, limit: int = 200) -> UpdateMachine:
    """Drive one update; lose power (lose memory) before step ``cut_at``."""
    now = 0.0
    m = phone.boot(now)
    step = 0
    while step < limit:
        assert m is not None
        behaviour = phone.behaviour.get(phone.link, "good")
        if behaviour == "crash":  # dies at start; systemd starts it again
            m = phone.boot(now)
            behaviour = phone.behaviour.get(phone.link, "good")
            if behaviour == "crash":
                continue
        phase = m.state.phase
        if phase is Phase.HEALTH_CHECK:
            if behaviour in ("good", "dies-later"):
                for fact in ("ready", "registered", "audio"):
                    m.health(now, fact)
                if behaviour == "dies-later":  # before it stayed up
                    now += 30.0
                    m.tick(now, NOON)
                    m = phone.boot(now)
                    continue
            elif behaviour == "no-audio":
                m.health(now, "ready")
                m.health(now, "registered")
            elif behaviour == "silent":
                m.health(now, "ready")
        actions = m.actions()
        if phase in (Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK) and not actions:
            if m.state.current == "1.1.0" or "1.1.0" in m.state.refused:
                return m  # the update is over, one way or the other
            m.check_requested(now)  # the next scheduled check
            continue
        for action in actions:
            phone.saved = m.state.to_dict()  # write-ahead
            step += 1
            if step == cut_at:
                m = phone.boot(now)  # the power is back; actions lost
                break
            if action.kind is A.CHECK:
                m.check_done("1.1.0")
            elif action.kind is A.DOWNLOAD:
                m.downloaded(now, NOON)
            elif action.kind is A.INSTALL:
                phone.installed.add(action.version)
                m.installed(now, NOON)
            elif action.kind is A.SWITCH:
                phone.previous, phone.link = phone.link, action.version
                m.switched()
            elif action.kind is A.SWITCH_BACK:
                phone.link = action.version
            elif action.kind is A.LINK_PREVIOUS:
                phone.link_previous(action.version)
            elif action.kind is A.RESTART:
                phone.saved = m.state.to_dict()
                m = phone.boot(now)
                break
            elif action.kind is A.COMMIT:
                pass
            phone.saved = m.state.to_dict()
        else:
            now += 61.0
            m.tick(now, NOON)
            phone.saved = m.state.to_dict()
    raise AssertionError(f"no end after {limit} steps: {m.state if m else None}")


BEHAVIOURS = ["good", "crash", "silent", "no-audio", "dies-later"]


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
@pytest.mark.parametrize("cut_at", [None, *range(1, 12)])
def test_a_power_cut_at_any_step_ends_on_a_working_release(behaviour, cut_at):
    phone = Phone({"1.0.0": "good", "1.1.0": behaviour})
    m = run_update(phone, cut_at)
    assert phone.behaviour[phone.link] == "good", m.state
    phone.agrees(m)
    if behaviour == "good":
        assert phone.link == "1.1.0"
        assert m.state.phase in (Phase.COMMITTED, Phase.IDLE)
        assert m.state.previous == "1.0.0"
    else:
        assert phone.link == "1.0.0"
        assert m.state.phase is Phase.ROLLED_BACK
        assert m.state.refused == ("1.1.0",)
        assert m.state.reason
        # As before the update: a rollback by hand never brings 1.1.0 back.
        assert phone.previous == "0.9.0"


@pytest.mark.parametrize("cut_at", [None, 1, 2, 3])
def test_a_power_cut_during_a_rollback_by_hand_ends_with_the_links_swapped(cut_at):
    phone = Phone(
        {"1.0.0": "good", "1.1.0": "good"},
        link="1.1.0",
        previous="1.0.0",
        saved=UpdateState(
            phase=Phase.COMMITTED, current="1.1.0", previous="1.0.0"
        ).to_dict(),
        installed={"1.0.0", "1.1.0"},
    )
    m = phone.boot(0.0)
    m.rollback_requested("by hand")
    for step, action in enumerate(m.actions(), 1):
        phone.saved = m.state.to_dict()  # write-ahead
        if step == cut_at:
            break  # the power is back below; what is left is lost
        if action.kind is A.LINK_PREVIOUS:
            phone.link_previous(action.version)
        elif action.kind is A.SWITCH_BACK:
            phone.link = action.version
    m = phone.boot(0.0)
    assert m.state.phase is Phase.ROLLED_BACK
    phone.agrees(m)
    assert (phone.link, phone.previous) == ("1.0.0", "1.1.0")
