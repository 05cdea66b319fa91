"""The updater's state machine (pure): when to check, download, install, switch.

Theory of operation. One update goes through these phases::

    idle -> checking -> downloading -> verified -> installing -> installed
         -> switching -> restarting -> health-check -> committed
                                                    \\-> rolling-back -> rolled-back

``committed`` and ``rolled-back`` are "idle, with the last result to show".
The adapter does the work each phase asks for (the :class:`Action` drained
from :meth:`UpdateMachine.actions`), then reports the outcome as an input.
Rules of this file:

* The table ``_TRANSITIONS`` is the only place an input changes the phase;
  any other combination raises :class:`InvalidStateError`. :meth:`resume`
  alone maps a persisted phase to its successor after a restart.
* Never during a call: downloading and verifying run whatever the phone does
  (they do not disturb a call), but installing, switching and restarting
  begin only when the phone is idle: not ringing, not in a call, and no key
  pressed for :attr:`UpdatePolicy.idle_after_s` (60 s). These are inputs
  (:meth:`phone_busy`, :meth:`key_pressed`), as is time (``now``, monotonic
  seconds, and ``minute_of_day``, local wall-clock minutes for the
  time-window policy). The boot check and the service read ``now`` from one
  clock (``time.monotonic``, shared by all processes of a boot).
* Policy (:mod:`appliance.update.policy`): ``automatic`` checks, downloads
  and installs by itself; ``window`` installs only inside the daily window;
  ``manual`` checks and shows what is available, and goes further only on
  :meth:`install_requested`.
* Crash or power cut at any step: the adapter persists :attr:`state`
  (:class:`UpdateState`, plain data) *before* it carries out the actions of a
  transition, and at every process start calls :meth:`resume` with the
  version actually running. Because ``current`` is switched by one atomic
  rename and the running process was started from it, the running version
  tells which side of the switch a cut fell on; :meth:`resume` maps every
  persisted phase to one that ends on a working release (``_resume_table``
  in the tests walks all of them).
* A release on trial is committed only when the service reports ready,
  registered and audio opened within :attr:`UpdatePolicy.health_timeout_s`,
  and then stays up for :attr:`UpdatePolicy.stay_up_s` (the last fact: a
  release that passes the others and dies seconds later must not be kept).
  If it does not, or the service starts more than
  :attr:`UpdatePolicy.max_starts` times during the trial (a crash loop; every
  start before the commit counts, a power cut while waiting too), the
  machine switches back to the last committed release and records why. A
  release rolled back is never installed again by itself.
* A release that passed its checks and stopped while it had to stay up is
  told apart from one that fails at start: when its checks passed and its
  stay-up deadline are persisted, and the start that switches it back says
  so, and how long after its checks it came (:func:`_restarted_reason`).
* ``previous`` is the release a rollback switches to: at rest it names the
  release committed before ``current`` (the link and :attr:`UpdateState.previous`
  agree), never one that failed its health check. A trial that fails puts
  both links back where they were before the switch. A rollback by hand from
  a committed release swaps them: the release left becomes ``previous``
  (it passed its health check), so a second rollback undoes the first; it is
  refused for automatic installs like any release rolled back.
  :attr:`ActionKind.LINK_PREVIOUS` comes before the switch back, so a cut
  between the two redoes both.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from appliance.errors import ConfigError, InvalidStateError
from appliance.update.policy import Policy, UpdatePolicy

__all__ = [
    "Action",
    "ActionKind",
    "Input",
    "Phase",
    "UpdateMachine",
    "UpdateState",
    "parse_version",
]

_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``: release versions are dotted numbers only.

    Pre-releases and local versions are refused so that "newer" is a plain
    tuple comparison (the release segment of PEP 440).
    """
    if not _VERSION.match(text):
        raise ConfigError("version", f"{text!r} is not a release version (N.N.N)")
    return tuple(int(part) for part in text.split("."))


class Phase(StrEnum):
    """Where an update stands (persisted)."""

    IDLE = "idle"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLING = "installing"
    INSTALLED = "installed"
    SWITCHING = "switching"
    RESTARTING = "restarting"
    HEALTH_CHECK = "health-check"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


class Input(StrEnum):
    """What the adapter reports."""

    CHECK = "check"
    FOUND = "found"
    NOTHING_NEW = "nothing-new"
    DOWNLOADED = "downloaded"
    START_INSTALL = "start-install"
    INSTALLED = "installed"
    SWITCH = "switch"
    SWITCHED = "switched"
    STARTED_NEW = "started-new"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    ROLLBACK = "rollback"
    STARTED_OLD = "started-old"
    FAILED = "failed"


class ActionKind(StrEnum):
    """Work the adapter must do."""

    CHECK = "check"  # TUF refresh, read the channel pointer
    DOWNLOAD = "download"  # download and verify the artifact through TUF
    INSTALL = "install"  # unpack into releases/<version>, install wheels
    SWITCH = "switch"  # point `current` at releases/<version> (atomic rename)
    RESTART = "restart"  # restart the service
    COMMIT = "commit"  # keep <version>, make the old one `previous`
    SWITCH_BACK = "switch-back"  # point `current` back at <version>
    LINK_PREVIOUS = "link-previous"  # point `previous` at <version>; "": none


@dataclass(frozen=True)
class Action:
    """One piece of work for the adapter."""

    kind: ActionKind
    version: str = ""


_P, _I = Phase, Input
_RESTING = (_P.IDLE, _P.COMMITTED, _P.ROLLED_BACK)
_FAILABLE = (_P.CHECKING, _P.DOWNLOADING, _P.INSTALLING, _P.SWITCHING)

_TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    **{(p, _I.CHECK): _P.CHECKING for p in _RESTING},
    (_P.CHECKING, _I.NOTHING_NEW): _P.IDLE,
    (_P.CHECKING, _I.FOUND): _P.DOWNLOADING,
    (_P.DOWNLOADING, _I.DOWNLOADED): _P.VERIFIED,
    (_P.VERIFIED, _I.START_INSTALL): _P.INSTALLING,
    (_P.INSTALLING, _I.INSTALLED): _P.INSTALLED,
    (_P.INSTALLED, _I.SWITCH): _P.SWITCHING,
    (_P.SWITCHING, _I.SWITCHED): _P.RESTARTING,
    (_P.RESTARTING, _I.STARTED_NEW): _P.HEALTH_CHECK,
    (_P.SWITCHING, _I.STARTED_NEW): _P.HEALTH_CHECK,  # cut after the rename
    (_P.HEALTH_CHECK, _I.STARTED_NEW): _P.HEALTH_CHECK,  # restarted on trial
    (_P.HEALTH_CHECK, _I.HEALTHY): _P.COMMITTED,
    (_P.HEALTH_CHECK, _I.UNHEALTHY): _P.ROLLING_BACK,
    **{(p, _I.ROLLBACK): _P.ROLLING_BACK for p in (*_RESTING, _P.HEALTH_CHECK)},
    (_P.ROLLING_BACK, _I.STARTED_OLD): _P.ROLLED_BACK,
    (_P.ROLLING_BACK, _I.STARTED_NEW): _P.ROLLING_BACK,  # cut before switch-back
    **{(p, _I.FAILED): _P.IDLE for p in _FAILABLE},
}


@dataclass(frozen=True)
class UpdateState:
    """What survives a restart: plain data, written to disk by the adapter.

    ``current`` is the last committed (known-good) release and ``previous``
    the one a rollback returns to (see the module docstring); ``candidate``
    the one being updated to or on trial; ``rollback_to`` the release a
    rollback under way switches to. ``refused`` lists versions rolled back
    from, never installed again without an explicit request. While the
    release on trial has to stay up, ``checked_at`` is when its checks passed
    and ``stay_up_until`` when it is committed (monotonic seconds).
    """

    phase: Phase = Phase.IDLE
    current: str = ""
    previous: str = ""
    candidate: str = ""
    rollback_to: str = ""
    reason: str = ""
    starts: int = 0
    install_requested: bool = False
    refused: tuple[str, ...] = ()
    checked_at: float | None = None
    stay_up_until: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["phase"] = str(self.phase)
        data["refused"] = list(self.refused)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateState:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writer)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["phase"] = Phase(known.get("phase", "idle"))
        known["refused"] = tuple(known.get("refused", ()))
        return cls(**known)


@dataclass
class _Runtime:
    """What does not survive a restart (monotonic times of this process)."""

    next_check: float | None = None
    last_key: float | None = None
    busy: bool = False
    health_deadline: float | None = None
    stay_up_until: float | None = None  # all facts in; commit then if still up
    facts: set[str] = field(default_factory=set)
    progress: float = 0.0
    last_tick: float = 0.0


#: How often an update waiting for an idle phone or the window looks again.
_LOOK_AGAIN_S = 60.0

#: The facts a release on trial must report (issue: READY, registered, audio).
HEALTH_FACTS = frozenset({"ready", "registered", "audio"})


class UpdateMachine:
    """The updater's decisions. Feed inputs, then drain :meth:`actions`.

    Every input method may queue actions; after each call the adapter must
    persist :attr:`state`, then carry out :meth:`actions` in order, and sleep
    until :meth:`next_deadline` to call :meth:`tick`.
    """

    def __init__(self, policy: UpdatePolicy, state: UpdateState) -> None:
        self.policy = policy
        self.state = state
        self._rt = _Runtime()
        self._actions: list[Action] = []

    # ------------------------------------------------------------ outputs

    def actions(self) -> list[Action]:
        """Drain the queued actions (empty when there are none)."""
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next (monotonic seconds)."""
        rt = self._rt
        # A check due during an update waits for its end (not a busy loop).
        check = rt.next_check if self.state.phase in _RESTING else None
        times = [check, rt.health_deadline, rt.stay_up_until]
        if self.state.phase in (Phase.VERIFIED, Phase.INSTALLED):
            # waiting for idle or for the window: look again each minute
            times.append(rt.last_tick + _LOOK_AGAIN_S)  # at once after a start
        found = [t for t in times if t is not None]
        return min(found) if found else None

    @property
    def progress(self) -> float:
        """Download progress, 0.0 to 1.0 (for the screen)."""
        return self._rt.progress

    @property
    def staying_up(self) -> bool:
        """On trial with every health fact in: waiting for the commit."""
        return self._rt.stay_up_until is not None

    # -------------------------------------------------------------- inputs

    def _go(self, event: Input, **changes: Any) -> None:
        phase = self.state.phase
        nxt = _TRANSITIONS.get((phase, event))
        if nxt is None:
            raise InvalidStateError(message=f"cannot {event} while {phase}")
        if nxt is not Phase.HEALTH_CHECK:  # the stay-up record ends with the trial
            changes.update(checked_at=None, stay_up_until=None)
        self.state = replace(self.state, phase=nxt, **changes)

    def resume(self, now: float, running: str) -> None:
        """The process (re)started running release ``running``; call first.

        Ends every persisted phase in one from which a working release follows.
        """
        self.adopt(running)
        state = self.state
        self._rt = _Runtime(next_check=now, last_tick=now - _LOOK_AGAIN_S)
        phase = state.phase
        if phase in (Phase.CHECKING, Phase.DOWNLOADING):
            self.state = replace(state, phase=Phase.IDLE)
        elif phase is Phase.INSTALLING:
            # A half-unpacked directory; the running release was not touched.
            self.state = replace(state, phase=Phase.VERIFIED)
        elif phase in (Phase.SWITCHING, Phase.RESTARTING, Phase.HEALTH_CHECK):
            if running == state.candidate:
                self._trial_started(now)
            elif phase is Phase.SWITCHING:
                self.state = replace(state, phase=Phase.INSTALLED)
            else:  # started from the old release after the switch: undone
                self._rolled_back(f"{state.candidate} did not start")
                # The switch pointed `previous` at the running release.
                self._actions.append(
                    Action(ActionKind.LINK_PREVIOUS, self.state.previous)
                )
        elif phase is Phase.ROLLING_BACK:
            if running == state.rollback_to:
                self._rolled_back(state.reason)
            else:  # cut before the switch back: do it again
                self._queue_rollback()

    def attach(self, now: float, running: str) -> None:
        """Like :meth:`resume`, after the boot check resumed for this start.

        Under systemd the boot check (``appliance update boot``, run from the
        image's own code before the service) has already called
        :meth:`resume` and so counted this start of a release on trial; the
        service only arms its own health deadline.
        """
        state = self.state
        if state.phase is Phase.HEALTH_CHECK and running == state.candidate:
            self.adopt(running)
            self._rt = _Runtime(next_check=now, last_tick=now - _LOOK_AGAIN_S)
            self._rt.health_deadline = now + self.policy.health_timeout_s
            return
        self.resume(now, running)

    def adopt(self, running: str) -> None:
        """Take ``running`` as the committed release if none is recorded yet.

        The first start of a phone from the factory image: what runs is good.
        """
        if not self.state.current and running:
            self.state = replace(self.state, current=running)

    def tick(self, now: float, minute_of_day: int) -> None:
        """Time passed: scheduled checks, health deadline, idle installs."""
        rt = self._rt
        rt.last_tick = now
        if rt.stay_up_until is not None and now >= rt.stay_up_until:
            self._commit()
            return
        if rt.health_deadline is not None and now >= rt.health_deadline:
            missing = sorted(HEALTH_FACTS - rt.facts)
            rt.health_deadline = None
            self._fail_trial(f"not {', '.join(missing)} within the health check")
            return
        if (
            rt.next_check is not None
            and now >= rt.next_check
            and self.state.phase in _RESTING
        ):
            self.check_requested(now)
            return
        self._maybe_progress(now, minute_of_day)

    def check_requested(self, now: float) -> None:
        """Check for a new release now (on command, or on schedule)."""
        if self.state.phase not in _RESTING:
            return  # an update is under way; its own outcome will follow
        self._rt.next_check = now + self.policy.check_interval_s
        self._go(Input.CHECK)
        self._actions.append(Action(ActionKind.CHECK))

    def check_done(self, available: str | None) -> None:
        """The check's answer: the newest release published, if any.

        A version not newer than the committed one is never installed
        (anti-rollback on top of TUF's own: a validly signed channel that
        points back is refused here too).
        """
        state = self.state
        newer = available is not None and (
            not state.current or parse_version(available) > parse_version(state.current)
        )
        wanted = (
            available is not None
            and newer
            and (available not in state.refused or state.install_requested)
            and (self.policy.policy is not Policy.MANUAL or state.install_requested)
        )
        if not wanted or available is None:
            reason = "" if available is None or not newer else f"{available} available"
            self._go(Input.NOTHING_NEW, reason=reason, install_requested=False)
            return
        self._rt.progress = 0.0
        self._go(Input.FOUND, candidate=available, reason="", starts=0)
        self._actions.append(Action(ActionKind.DOWNLOAD, available))

    def download_progress(self, fraction: float) -> None:
        """Bytes arrived (for the screen only)."""
        self._rt.progress = min(max(fraction, 0.0), 1.0)

    def downloaded(self, now: float, minute_of_day: int) -> None:
        """The artifact is on disk and TUF verified it."""
        self._rt.progress = 1.0
        self._go(Input.DOWNLOADED)
        self._maybe_progress(now, minute_of_day)

    def failed(self, reason: str) -> None:
        """The step under way failed (network, verification, disk): give up."""
        self._go(Input.FAILED, reason=reason, candidate="", install_requested=False)

    def install_requested(self, now: float) -> None:
        """``appliance update install``: look for a release and install it."""
        self.state = replace(self.state, install_requested=True)
        if self.state.phase in _RESTING:
            self.check_requested(now)

    def phone_busy(self, busy: bool) -> None:
        """The phone started or stopped ringing or being in a call."""
        self._rt.busy = busy

    def key_pressed(self, now: float) -> None:
        """A key or the hook was used (the phone is not idle for a while)."""
        self._rt.last_key = now

    def is_idle(self, now: float) -> bool:
        """Not ringing, not in a call, no key for ``idle_after_s``."""
        rt = self._rt
        quiet = rt.last_key is None or now - rt.last_key >= self.policy.idle_after_s
        return not rt.busy and quiet

    def installed(self, now: float, minute_of_day: int) -> None:
        """The release directory is complete; switch when the phone is idle."""
        self._go(Input.INSTALLED)
        self._maybe_progress(now, minute_of_day)

    def switched(self) -> None:
        """``current`` points at the candidate; the restart is under way."""
        self._go(Input.SWITCHED)
        self._actions.append(Action(ActionKind.RESTART))

    def health(self, now: float, fact: str) -> None:
        """The release on trial reports ``ready``, ``registered`` or ``audio``.

        With all three in, the release must stay up (this process keep
        running) for ``stay_up_s``: :meth:`tick` commits it then.
        """
        if fact not in HEALTH_FACTS:
            raise ValueError(f"unknown health fact {fact!r}")
        if self.state.phase is not Phase.HEALTH_CHECK:
            return
        rt = self._rt
        rt.facts.add(fact)
        if rt.facts >= HEALTH_FACTS and rt.health_deadline is not None:
            rt.health_deadline = None
            rt.stay_up_until = now + self.policy.stay_up_s
            until = rt.stay_up_until  # persisted: a next start tells why it came
            self.state = replace(self.state, checked_at=now, stay_up_until=until)
            if self.policy.stay_up_s == 0:
                self._commit()

    def health_failed(self, reason: str) -> None:
        """The release on trial failed in a way seen before the deadline."""
        if self.state.phase is Phase.HEALTH_CHECK:
            self._fail_trial(reason)

    def rollback_requested(self, reason: str) -> None:
        """``appliance update rollback``: go back to the previous release."""
        state = self.state
        if state.phase is Phase.HEALTH_CHECK:
            self._fail_trial(reason)
            return
        if not state.previous or state.previous == state.current:
            raise InvalidStateError(message="cannot rollback: no previous release")
        self._go(
            Input.ROLLBACK,
            rollback_to=state.previous,
            candidate=state.current,
            reason=reason,
        )
        self._queue_rollback()

    # ------------------------------------------------------------ helpers

    def _maybe_progress(self, now: float, minute_of_day: int) -> None:
        """Install, then switch, when policy and the phone allow it."""
        phase = self.state.phase
        if phase not in (Phase.VERIFIED, Phase.INSTALLED) or not self.is_idle(now):
            return
        policy = self.policy.policy
        if (
            policy is Policy.WINDOW
            and not self.state.install_requested
            and not self.policy.in_window(minute_of_day)
        ):
            return
        version = self.state.candidate
        if phase is Phase.VERIFIED:
            self._go(Input.START_INSTALL)
            self._actions.append(Action(ActionKind.INSTALL, version))
        else:
            self._go(Input.SWITCH)
            self._actions.append(Action(ActionKind.SWITCH, version))

    def _trial_started(self, now: float) -> None:
        before = self.state
        starts = before.starts + 1
        self._go(Input.STARTED_NEW, starts=starts, checked_at=None, stay_up_until=None)
        if starts > self.policy.max_starts:
            self._fail_trial(_restarted_reason(before, now))
            return
        self._rt.facts = set()
        self._rt.health_deadline = now + self.policy.health_timeout_s

    def _commit(self) -> None:
        self._rt.stay_up_until = None
        state = self.state
        self._go(
            Input.HEALTHY,
            previous=state.current,
            current=state.candidate,
            candidate="",
            reason="",
            starts=0,
            install_requested=False,
        )
        self._actions.append(Action(ActionKind.COMMIT, self.state.current))

    def _fail_trial(self, reason: str) -> None:
        self._rt.health_deadline = self._rt.stay_up_until = None
        self._go(Input.UNHEALTHY, rollback_to=self.state.current, reason=reason)
        self._queue_rollback()

    def _previous_after_rollback(self) -> str:
        """What ``previous`` names once the rollback under way is done."""
        state = self.state
        target = state.rollback_to or state.current
        if target == state.current:
            # A trial failed: back to before the switch; the candidate never
            # becomes `previous`.
            return state.previous
        # By hand from the committed release: it stays at hand.
        return state.current

    def _queue_rollback(self) -> None:
        previous = self._previous_after_rollback()
        self._actions.append(Action(ActionKind.LINK_PREVIOUS, previous))
        self._actions.append(Action(ActionKind.SWITCH_BACK, self.state.rollback_to))
        self._actions.append(Action(ActionKind.RESTART))

    def _rolled_back(self, reason: str) -> None:
        state = self.state
        target = state.rollback_to or state.current
        refused = tuple(v for v in state.refused if v != target)
        if state.candidate and state.candidate not in refused:
            refused = (*refused, state.candidate)
        self.state = replace(
            state,
            phase=Phase.ROLLED_BACK,
            current=target,
            previous=self._previous_after_rollback(),
            candidate="",
            rollback_to="",
            reason=reason,
            starts=0,
            install_requested=False,
            refused=refused,
            checked_at=None,
            stay_up_until=None,
        )


def _restarted_reason(before: UpdateState, now: float) -> str:
    """Why a release on trial is switched back at start ``before.starts + 1``.

    ``before`` is the state its last start left. If that start passed its
    health checks, the release stopped while it had to stay up: say so, and
    how long after its checks this start came (at most that long up). After
    a power cut the clock starts again: a ``now`` before ``checked_at`` gives
    no figure, and one after it gives a wrong one (only if the new boot
    reached its boot check later than the old one reached the checks).
    """
    restarted = f"restarted {before.starts} times"
    checked_at, until = before.checked_at, before.stay_up_until
    if checked_at is None or until is None:
        return f"{before.candidate} {restarted}"
    since = now - checked_at
    when = f"within {max(math.ceil(since), 1)} s of" if since >= 0 else "after"
    return (
        f"{before.candidate} stopped {when} passing its health checks, "
        f"before it had stayed up {until - checked_at:g} s ({restarted})"
    )
