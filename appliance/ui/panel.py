"""The front panel's behaviour as a pure state machine.

Rules of this file
------------------
* No I/O, no clock: every input takes ``now`` (monotonic seconds). The adapter
  calls :meth:`Panel.tick` at :meth:`Panel.next_deadline`.
* Inputs are user gestures (:meth:`Panel.key`, :meth:`Panel.button`) and engine
  facts (:meth:`Panel.registered`, :meth:`Panel.incoming`, ...). Outputs are
  commands for the engine and audio (:mod:`appliance.ui.commands`, drained with
  :meth:`Panel.commands_to_send`) plus queries the screens and LEDs read
  (:meth:`Panel.view`, :meth:`Panel.ringer_pattern`, :meth:`Panel.status_led`).
* Transitions are the table :data:`_KEY_TABLE` / :data:`_BUTTON_TABLE`:
  ``(state, input) -> handler``; guards live in the handlers. A user gesture
  with no entry does nothing: a phone does not complain about a stray key.
* Engine facts are facts: they are applied in every state where they mean
  something and ignored elsewhere (for example ``disconnected`` after we
  already went back to idle on Hangup).

States
------
``offline`` (not registered; shows "reconnecting" and the next retry, or a
"press Ready" hint before the first setup), ``connecting`` (Setup sent),
``idle``, ``dialing`` (a dial string is being typed), ``calling`` (outgoing,
before answer), ``ringing`` (incoming), ``in_call``, ``error`` (an error is
shown for ``error_display_s``, then the panel resumes where it belongs),
``call_log`` (browsing the log: :mod:`appliance.ui.calllog_view`, which also
holds the clock, network bars and do-not-disturb), ``provisioning`` and
``confirm_reset``: "Reset provisioning?", entered by
holding Hangup when no call is up or by ``appliance provision reset``
(:meth:`Panel.reset_requested`); only holding Hangup for
:data:`RESET_HOLD_S` there emits :class:`ResetProvisioning`, any other
button, a call or :data:`RESET_CONFIRM_S` without it emits
:class:`ResetCancelled`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from appliance.cadence import Cadence, tones_for
from appliance.errors import ConfigError
from appliance.ui.calllog_view import DND_MODES, DeskState, LogItem
from appliance.ui.commands import (
    Accept,
    Command,
    Decline,
    Dial,
    Hangup,
    Ignore,
    MarkMissedSeen,
    PlayLocalDtmf,
    Reject,
    ResetCancelled,
    ResetProvisioning,
    SendDigits,
    SetDnd,
    SetMute,
    Setup,
    SetVolume,
)

__all__ = [
    "DTMF_KEYS",
    "RESET_CONFIRM_S",
    "RESET_HOLD_S",
    "VOLUME_DEFAULT_LEVEL",
    "VOLUME_MAX_LEVEL",
    "VOLUME_ROLES",
    "Accept",
    "Command",
    "Decline",
    "Dial",
    "Hangup",
    "Ignore",
    "MarkMissedSeen",
    "Panel",
    "PanelButton",
    "PanelState",
    "PanelView",
    "PlayLocalDtmf",
    "Reject",
    "ResetCancelled",
    "ResetProvisioning",
    "Screen",
    "SendDigits",
    "SetDnd",
    "SetMute",
    "SetVolume",
    "Setup",
    "StatusLed",
    "volume_gain",
]

#: Keys of the 4x3 keypad, which are also the DTMF digits we send.
DTMF_KEYS = frozenset("0123456789*#")

#: Volume steps of the Vol+/Vol- buttons: level 0 to 8, 3 dB apart, level 6
#: plays sounds as they are (0 dB), 8 is +6 dB. Ringer level 0 is a silent
#: ring (the LED still flashes); a call never goes below level 1 (-15 dB) from
#: the buttons, so that it cannot be mistaken for a dead line.
VOLUME_MAX_LEVEL = 8
VOLUME_DEFAULT_LEVEL = 6
#: The audio roles the buttons set (Device.audio's speaker and ringtone devices).
VOLUME_ROLES = ("speaker", "ringtone")
_VOLUME_STEP_DB = 3.0
#: How long the volume bar stays on screen after the last press.
_VOLUME_SHOW_S = 2.0
#: Hold Hangup this long on the "Reset provisioning?" screen to confirm.
RESET_HOLD_S = 3.0
#: The confirmation is abandoned after this long.
RESET_CONFIRM_S = 30.0
#: Accept this soon after a call ended does not redial: it was meant for the
#: call that just ended (most often a ring the caller gave up a moment ago).
_REDIAL_GUARD_S = 2.0

# A directory code is what can be typed on the keypad (no '#': it dials).
_CODE_RE = re.compile(r"[0-9*]{1,32}")
# Twilio client identities: letters, digits and underscores (Access Token docs).
_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,121}")


class PanelState(StrEnum):
    """Where the panel is."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    IDLE = "idle"
    DIALING = "dialing"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"
    ERROR = "error"
    PROVISIONING = "provisioning"
    CONFIRM_RESET = "confirm_reset"
    CALL_LOG = "call_log"


class Screen(StrEnum):
    """Which screen to draw (``updating`` shows over offline and idle only)."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    IDLE = "idle"
    DIALING = "dialing"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"
    ERROR = "error"
    PROVISIONING = "provisioning"
    CONFIRM_RESET = "confirm_reset"
    CALL_LOG = "call_log"
    UPDATING = "updating"


class PanelButton(StrEnum):
    """Button gestures. ``hangup_held`` is a long press; hook is the switch."""

    READY = "ready"
    ACCEPT = "accept"
    HANGUP = "hangup"
    HANGUP_HELD = "hangup_held"
    HANGUP_RELEASED = "hangup_released"
    MUTE = "mute"
    VOL_UP = "vol_up"
    VOL_DOWN = "vol_down"
    HOOK_UP = "hook_up"
    HOOK_DOWN = "hook_down"
    #: Do-not-disturb on/off (holding # on the keypad).
    DND = "dnd"


class StatusLed(StrEnum):
    """Status LED modes (see :data:`appliance.cadence.STATUS_SLOW` and friends)."""

    OFF = "off"
    STEADY = "steady"
    SLOW = "slow"
    FAST = "fast"


def volume_gain(level: int) -> float:
    """The linear gain of a volume level (0 is silent, then 3 dB steps)."""
    if level <= 0:
        return 0.0
    return float(10 ** ((level - VOLUME_DEFAULT_LEVEL) * _VOLUME_STEP_DB / 20))


@dataclass(frozen=True)
class PanelView:
    """Everything the screens need, as plain values.

    Attributes:
        screen: which screen to draw.
        now: the time of the latest input; timers are ``now - call_started_at``.
        identity: our client identity once registered.
        registered: registration state for the status bar.
        network_up: ``None`` when unknown.
        dial_string: what has been typed.
        dial_match: the directory name the dial string matches, if any.
        remote: the other party (caller id or dialled target, as received).
        remote_ringing: the far end is ringing (outgoing calls).
        params: custom parameters of an incoming call.
        call_started_at: when the call was answered.
        muted: microphone muted.
        error_code / error_message: the error being shown.
        next_retry_at: when the engine retries registration, if known.
        setup_requested: whether Ready has been pressed at least once.
        ringer_off: the ringer volume is at 0 (status bar icon).
        volume_role: the role whose volume bar is shown ("" = none).
        volume_level: that role's level, 0..VOLUME_MAX_LEVEL.
        provisioning_code: the user code to type at the verification URI.
        provisioning_uri: what the QR code holds (verification_uri_complete);
            empty = no code to show, only ``provisioning_message``.
        provisioning_message: what provisioning is doing or why it stopped.
        reset_hold_until: on the reset confirmation, when the Hangup being
            held confirms it (None = not held).
        update_status: what a remote update is doing ("" = nothing to show):
            ``Downloading``, ``Installing``, ``Restarting``, ``Rolled back``...
        update_version: the release it concerns.
        update_progress: the download's fraction done, or None.
        update_reason: why it was rolled back.
        missed_calls: missed calls not seen yet (idle screen, status LED).
        dnd: do-not-disturb is on.
        clock_time / clock_date: the idle screen's clock, as text.
        network_bars: 0-3 from the last call's quality, None = unknown.
        log_items / log_selected: the call log, newest first, and the entry
            Accept calls back.
    """

    screen: Screen
    now: float = 0.0
    identity: str = ""
    registered: bool = False
    network_up: bool | None = None
    dial_string: str = ""
    dial_match: str = ""
    remote: str = ""
    remote_ringing: bool = False
    params: tuple[tuple[str, str], ...] = ()
    call_started_at: float | None = None
    muted: bool = False
    error_code: int | None = None
    error_message: str = ""
    next_retry_at: float | None = None
    setup_requested: bool = False
    ringer_off: bool = False
    volume_role: str = ""
    volume_level: int = 0
    provisioning_code: str = ""
    provisioning_uri: str = ""
    provisioning_message: str = ""
    reset_hold_until: float | None = None
    update_status: str = ""
    update_version: str = ""
    update_progress: float | None = None
    update_reason: str = ""
    missed_calls: int = 0
    dnd: bool = False
    clock_time: str = ""
    clock_date: str = ""
    network_bars: int | None = None
    log_items: tuple[LogItem, ...] = ()
    log_selected: int = 0


@dataclass
class _Call:
    remote: str = ""
    params: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    ring_started_at: float = 0.0
    remote_ringing: bool = False


_Handler = Callable[["Panel", str, float], None]


class Panel:
    """The front panel state machine.

    Example::

        panel = Panel(directory={"100": "alice"})
        panel.button("ready", now=0.0)        # -> [Setup()]
        panel.registered("bob", now=0.5)
        for key in "100":
            panel.key(key, now=1.0)
        panel.button("accept", now=2.0)       # -> [Dial("client:alice")]
        panel.commands_to_send()

    Args:
        directory: dial code (keypad digits) -> client name; dialling a code
            calls ``client:NAME``. Comes from config.
        country: selects the ring cadence (:func:`appliance.cadence.tones_for`).
        ring_cadence: overrides the country's ring cadence.
        max_dial_length: longest dial string; further digits are ignored.
        ignore_after_rings: emit :class:`Ignore` after this many rings.
        error_display_s: how long an error stays on screen.
        volume: starting level per role (``speaker``, ``ringtone``), e.g. as
            saved by the controller; missing roles start at the default.
        dnd_mode: how do-not-disturb turns calls away (``busy``, ``ignore``).

    Raises:
        ConfigError: invalid directory entry or option (the key names it).
    """

    def __init__(
        self,
        *,
        directory: Mapping[str, str] | None = None,
        country: str = "US",
        ring_cadence: Cadence | None = None,
        max_dial_length: int = 20,
        ignore_after_rings: int | None = None,
        error_display_s: float = 4.0,
        volume: Mapping[str, int] | None = None,
        dnd_mode: str = "busy",
    ) -> None:
        self._directory = dict(directory or {})
        for code, name in self._directory.items():
            if not _CODE_RE.fullmatch(code):
                raise ConfigError(f"ui.directory.{code}", "code must be keypad digits")
            if not _NAME_RE.fullmatch(name):
                raise ConfigError(
                    f"ui.directory.{code}", f"invalid client name {name!r}"
                )
        if max_dial_length < 1:
            raise ConfigError("ui.max_dial_length", "must be at least 1")
        if ignore_after_rings is not None and ignore_after_rings < 1:
            raise ConfigError("ui.ignore_after_rings", "must be at least 1")
        if error_display_s <= 0:
            raise ConfigError("ui.error_display_s", "must be positive")
        if dnd_mode not in DND_MODES:
            raise ConfigError("ui.dnd_mode", f"must be one of {', '.join(DND_MODES)}")
        self._desk = DeskState(dnd_silent=dnd_mode == "ignore")
        self._ring = ring_cadence or tones_for(country).ring
        self._max_dial = max_dial_length
        self._ignore_after = ignore_after_rings
        self._error_display_s = error_display_s
        self._volume = dict.fromkeys(VOLUME_ROLES, VOLUME_DEFAULT_LEVEL)
        for role, level in (volume or {}).items():
            if role not in self._volume:
                raise ConfigError(f"volume.{role}", "must be speaker or ringtone")
            if isinstance(level, bool) or not isinstance(level, int):
                raise ConfigError(f"volume.{role}", f"not a level: {level!r}")
            self._volume[role] = min(max(level, _min_level(role)), VOLUME_MAX_LEVEL)
        self._volume_shown: str = ""
        self._volume_until = 0.0

        self._state = PanelState.OFFLINE
        self._now = 0.0
        self._commands: list[Command] = []
        self._identity = ""
        self._registered = False
        self._network_up: bool | None = None
        self._next_retry_at: float | None = None
        self._setup_requested = False
        self._dial = ""
        self._last_dialled = ""
        self._call_ended_at = -float("inf")
        self._call: _Call | None = None
        self._muted = False
        self._error: tuple[int, str] | None = None
        self._error_until = 0.0
        self._provisioning: tuple[str, str, str] | None = None
        #: Whether this phone can be reset (it is provisioned by a provisioner).
        self.reset_enabled = False
        self._reset_until = 0.0
        self._reset_hold_until: float | None = None
        self._update: tuple[str, str, float | None, str] | None = None

    # --- queries ------------------------------------------------------------

    @property
    def state(self) -> PanelState:
        """The current state."""
        return self._state

    def view(self) -> PanelView:
        """Return what the screens should show now."""
        call = self._call
        update = self._update or ("", "", None, "")
        screen = Screen(self._state.value)
        if self._update is not None and self._state in _UPDATE_OVER:
            screen = Screen.UPDATING
        return PanelView(
            screen=screen,
            now=self._now,
            identity=self._identity,
            registered=self._registered,
            network_up=self._network_up,
            dial_string=self._dial,
            dial_match=self._directory.get(self._dial, ""),
            remote=call.remote if call else "",
            remote_ringing=call.remote_ringing if call else False,
            params=tuple(sorted(call.params.items())) if call else (),
            call_started_at=call.started_at if call else None,
            muted=self._muted,
            error_code=self._error[0] if self._error else None,
            error_message=self._error[1] if self._error else "",
            next_retry_at=self._next_retry_at,
            setup_requested=self._setup_requested,
            ringer_off=self._volume["ringtone"] == 0,
            volume_role=self._volume_shown,
            volume_level=self._volume.get(self._volume_shown, 0),
            provisioning_code=self._provisioning[0] if self._provisioning else "",
            provisioning_uri=self._provisioning[1] if self._provisioning else "",
            provisioning_message=self._provisioning[2] if self._provisioning else "",
            reset_hold_until=self._reset_hold_until,
            update_status=update[0],
            update_version=update[1],
            update_progress=update[2],
            update_reason=update[3],
            missed_calls=self._desk.unseen_missed,
            dnd=self._desk.dnd,
            clock_time=self._desk.clock[0],
            clock_date=self._desk.clock[1],
            network_bars=self._desk.bars,
            log_items=self._desk.items,
            log_selected=self._desk.selected,
        )

    def volume_levels(self) -> dict[str, int]:
        """Return the current level of each role (to save, or to apply)."""
        return dict(self._volume)

    def ringer_pattern(self) -> Cadence | None:
        """Return the ringer cadence while an incoming call rings, else ``None``."""
        return self._ring if self._state is PanelState.RINGING else None

    def ring_started_at(self) -> float | None:
        """Return when ringing started (the cadence's time origin), if ringing."""
        if self._state is PanelState.RINGING and self._call is not None:
            return self._call.ring_started_at
        return None

    def status_led(self) -> StatusLed:
        """Return the status LED mode: fast when ringing, slow when offline."""
        if self._state is PanelState.RINGING:
            return StatusLed.FAST
        if not self._registered or self._desk.unseen_missed:
            # Slow blinking also signals missed calls, as a desk phone's
            # message-waiting lamp does.
            return StatusLed.SLOW
        return StatusLed.STEADY

    def commands_to_send(self) -> list[Command]:
        """Return and clear the commands produced by the inputs so far."""
        commands, self._commands = self._commands, []
        return commands

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` must be called, or ``None``."""
        deadlines: list[float] = []
        if self._volume_shown:
            deadlines.append(self._volume_until)
        if self._state is PanelState.ERROR:
            deadlines.append(self._error_until)
        elif self._state is PanelState.CONFIRM_RESET:
            deadlines.append(self._reset_until)
            if self._reset_hold_until is not None:
                deadlines.append(self._reset_hold_until)
        elif (
            self._state is PanelState.RINGING
            and self._ignore_after is not None
            and self._call is not None
        ):
            deadlines.append(
                self._call.ring_started_at + self._ignore_after * self._ring.period_s
            )
        return min(deadlines, default=None)

    # --- user input ---------------------------------------------------------

    def key(self, key: str, now: float) -> None:
        """Handle a keypad press (``'0'``-``'9'``, ``'*'``, ``'#'``).

        Then drain :meth:`commands_to_send` and redraw :meth:`view`.

        Raises:
            ValueError: ``key`` is not a keypad key.
        """
        if key not in DTMF_KEYS:
            raise ValueError(f"not a keypad key: {key!r}")
        self._now = now
        handler = _KEY_TABLE.get(self._state)
        if handler is not None:
            handler(self, key, now)

    def button(self, button: PanelButton | str, now: float) -> None:
        """Handle a button gesture (see :class:`PanelButton`).

        Raises:
            ValueError: unknown button name.
        """
        name = PanelButton(button)
        self._now = now
        if name is PanelButton.VOL_UP or name is PanelButton.VOL_DOWN:
            self._change_volume(1 if name is PanelButton.VOL_UP else -1, now)
            return
        handler = _BUTTON_TABLE.get((self._state, name))
        if handler is not None:
            handler(self, name, now)

    def tick(self, now: float) -> None:
        """Advance time: end the error display and the volume bar, auto-ignore."""
        self._now = now
        if self._volume_shown and now >= self._volume_until:
            self._volume_shown = ""
        if self._state is PanelState.ERROR and now >= self._error_until:
            self._error = None
            self._resume()
        if self._state is PanelState.CONFIRM_RESET:
            if self._reset_hold_until is not None and now >= self._reset_hold_until:
                self._leave_confirm(ResetProvisioning())
            elif now >= self._reset_until:
                self._leave_confirm(ResetCancelled())
        deadline = self.next_deadline()
        if (
            self._state is PanelState.RINGING
            and deadline is not None
            and now >= deadline
        ):
            self._commands.append(Ignore())
            self._end_call()

    def network(self, up: bool, now: float) -> None:
        """Record the network link state for the status bar."""
        self._now = now
        self._network_up = up

    # --- engine facts -------------------------------------------------------

    def registered(self, identity: str, now: float) -> None:
        """The engine registered as ``identity``."""
        self._now = now
        if self._identity and identity != self._identity:
            # Provisioned as someone else: the last number is not theirs.
            self._last_dialled = ""
        self._identity = identity
        self._registered = True
        self._next_retry_at = None
        if self._state in (PanelState.OFFLINE, PanelState.CONNECTING):
            self._state = PanelState.IDLE

    def unregistered(self, next_retry_at: float | None, now: float) -> None:
        """The engine lost (or gave up) registration; it retries at ``next_retry_at``.

        A call in progress continues; the panel goes offline when it is idle.
        """
        self._now = now
        self._registered = False
        self._next_retry_at = next_retry_at
        if self._state in (
            PanelState.IDLE,
            PanelState.DIALING,
            PanelState.CONNECTING,
            PanelState.CALL_LOG,
        ):
            self._dial = ""
            self._state = PanelState.OFFLINE

    def incoming(self, from_: str, params: Mapping[str, str], now: float) -> None:
        """An incoming call from ``from_`` with custom ``params`` starts ringing.

        While busy (calling, ringing or in a call) the panel leaves the second
        call to the engine's busy handling.
        """
        self._now = now
        if self._call is not None:
            return
        if self._desk.dnd:
            # Do-not-disturb: turned away without ringing (logged as missed).
            self._commands.append(Decline(self._desk.dnd_silent))
            return
        if self._state is PanelState.ERROR:
            self._error = None
        if self._state is PanelState.CONFIRM_RESET:
            self._leave_confirm(ResetCancelled())
        self._call = _Call(remote=from_, params=dict(params), ring_started_at=now)
        self._dial = ""
        self._state = PanelState.RINGING

    def outgoing_started(self, to: str, now: float) -> None:
        """The engine placed the outgoing call to ``to``."""
        self._now = now
        if self._state is PanelState.CALLING and self._call is not None:
            self._call.remote = to

    def ringing(self, now: float) -> None:
        """The far end of our outgoing call is ringing."""
        self._now = now
        if self._state is PanelState.CALLING and self._call is not None:
            self._call.remote_ringing = True

    def accepted(self, now: float) -> None:
        """The call is connected (answered by them, or by us)."""
        self._now = now
        if self._call is None:
            return
        if self._call.started_at is None:
            self._call.started_at = now
        if self._state in (PanelState.CALLING, PanelState.RINGING):
            self._state = PanelState.IN_CALL

    def disconnected(self, now: float) -> None:
        """The call ended."""
        self._now = now
        self._call_gone()

    def cancelled(self, now: float) -> None:
        """The caller gave up before we answered."""
        self._now = now
        self._call_gone()

    def rejected(self, now: float) -> None:
        """The far end rejected our call (or we rejected theirs)."""
        self._now = now
        self._call_gone()

    def error(self, code: int, message: str, now: float) -> None:
        """Show an engine error (Twilio code and message) for a few seconds.

        An error while calling means the call failed; during a connected call
        the call continues (the engine reports ``disconnected`` if it ends).
        """
        self._now = now
        if self._state is PanelState.CONFIRM_RESET:
            self._leave_confirm(ResetCancelled())
        self._error = (code, message)
        self._error_until = now + self._error_display_s
        if self._state in (PanelState.CALLING, PanelState.RINGING):
            self._call = None
        if self._state is not PanelState.IN_CALL:
            self._dial = ""
        self._state = PanelState.ERROR

    def provisioning(self, user_code: str, uri: str, message: str, now: float) -> None:
        """Show the provisioning screen: a code to approve (QR of ``uri``) or
        just ``message`` (revoked, token expired); it stays until
        :meth:`provisioned`. A call in progress is left on screen; the panel
        shows provisioning when the call ends.
        """
        self._now = now
        self._provisioning = (user_code, uri, message)
        if self._call is None and self._state in (
            PanelState.OFFLINE,
            PanelState.CONNECTING,
            PanelState.IDLE,
            PanelState.DIALING,
            PanelState.PROVISIONING,
        ):
            self._dial = ""
            self._state = PanelState.PROVISIONING

    def update_shown(
        self,
        status: str,
        version: str = "",
        progress: float | None = None,
        reason: str = "",
        *,
        now: float,
    ) -> None:
        """Show what a remote update does (``status`` "" hides it).

        The update screen replaces only the offline and idle screens: dialling,
        a ringing phone and a call keep theirs (an update never takes over).
        """
        self._now = now
        self._update = (status, version, progress, reason) if status else None

    def provisioned(self, now: float) -> None:
        """The phone has its identity and a token: leave the provisioning screen."""
        self._now = now
        self._provisioning = None
        if self._state is PanelState.PROVISIONING:
            self._resume()

    def reset_requested(self, now: float) -> bool:
        """``appliance provision reset`` asks: show the confirmation screen.

        Returns False (and emits nothing) when it cannot be shown now: a call
        is up, or this phone has no provisioning to reset; the answer comes
        later as :class:`ResetProvisioning` or :class:`ResetCancelled`.
        """
        self._now = now
        if self._state is PanelState.CONFIRM_RESET:
            return True
        if not self.reset_enabled or self._state not in _RESET_FROM:
            return False
        self._on_reset_prompt("", now)
        return True

    @property
    def dnd(self) -> bool:
        """Whether do-not-disturb is on."""
        return self._desk.dnd

    def set_dnd(self, on: bool, now: float) -> None:
        """Set do-not-disturb as saved (no :class:`SetDnd` is emitted)."""
        self._now = now
        self._desk.dnd = on

    def choose_dnd(self, on: bool, now: float) -> None:
        """Switch do-not-disturb from elsewhere (the web page), as the key does."""
        self._now = now
        if on != self._desk.dnd:
            self._desk.dnd = on
            self._commands.append(SetDnd(on))

    def set_volume_level(self, role: str, level: int, now: float) -> None:
        """Set ``role``'s level from elsewhere (the web page), as the keys do.

        Raises:
            ValueError: ``role`` is not one of :data:`VOLUME_ROLES`.
        """
        if role not in VOLUME_ROLES:
            raise ValueError(f"no volume role {role!r}")
        self._now = now
        level = min(max(level, _min_level(role)), VOLUME_MAX_LEVEL)
        if level != self._volume[role]:
            self._volume[role] = level
            self._commands.append(SetVolume(role, level, volume_gain(level)))

    def call_log(
        self, items: tuple[LogItem, ...], unseen_missed: int, now: float
    ) -> None:
        """The call log changed (newest first) and has ``unseen_missed`` calls."""
        self._now = now
        self._desk.set_items(items, unseen_missed)
        if self._state is PanelState.CALL_LOG and not items:
            self._state = PanelState.IDLE

    def clock(self, time_text: str, date_text: str, now: float) -> None:
        """The idle screen's clock, as text (``format_clock``)."""
        self._now = now
        self._desk.clock = (time_text, date_text)

    def network_bars(self, bars: int | None, now: float) -> None:
        """The network bars to show (0-3, None: unknown)."""
        self._now = now
        self._desk.bars = bars

    # --- handlers (the table below points here) ---------------------------

    def _on_log_open(self, _: str, now: float) -> None:
        had_unseen = self._desk.unseen_missed > 0
        if self._desk.open_log():
            self._state = PanelState.CALL_LOG
        if had_unseen:
            self._commands.append(MarkMissedSeen())

    def _on_log_key(self, key: str, now: float) -> None:
        step = {"8": 1, "2": -1}.get(key)
        if step is not None:
            self._desk.scroll(step)

    def _on_log_next(self, _: str, now: float) -> None:
        self._desk.scroll(1)

    def _on_log_call(self, _: str, now: float) -> None:
        remote = self._desk.selected_remote()
        if remote:
            self._place_call(remote)

    def _on_log_close(self, _: str, now: float) -> None:
        self._state = PanelState.IDLE if self._registered else PanelState.OFFLINE

    def _on_dnd_toggle(self, _: str, now: float) -> None:
        self._desk.dnd = not self._desk.dnd
        self._commands.append(SetDnd(self._desk.dnd))

    def _on_reset_prompt(self, _: str, now: float) -> None:
        if not self.reset_enabled:
            return
        self._error = None
        self._dial = ""
        self._state = PanelState.CONFIRM_RESET
        self._reset_until = now + RESET_CONFIRM_S
        self._reset_hold_until = None

    def _on_reset_hold(self, _: str, now: float) -> None:
        self._reset_hold_until = now + RESET_HOLD_S

    def _on_reset_release(self, _: str, now: float) -> None:
        self._reset_hold_until = None

    def _on_reset_cancel(self, _: str, now: float) -> None:
        self._leave_confirm(ResetCancelled())

    def _leave_confirm(self, outcome: ResetProvisioning | ResetCancelled) -> None:
        self._commands.append(outcome)
        self._reset_hold_until = None
        self._resume()

    def _start_dialing(self, key: str, now: float) -> None:
        if key == "#":
            return
        self._commands.append(PlayLocalDtmf(key))
        self._dial = key
        self._state = PanelState.DIALING

    def _type_digit(self, key: str, now: float) -> None:
        self._commands.append(PlayLocalDtmf(key))
        if key == "#":
            self._dial_now()
        elif len(self._dial) < self._max_dial:
            self._dial += key

    def _send_dtmf(self, key: str, now: float) -> None:
        # In a call the engine plays the local tone with the digit it sends,
        # as Twilio.Connection.sendDigits does; a second tone here would double it.
        self._commands.append(SendDigits(key))

    def _dial_now(self) -> None:
        if not self._dial:
            return
        name = self._directory.get(self._dial)
        to = f"client:{name}" if name is not None else self._dial
        self._place_call(to)

    def _place_call(self, to: str) -> None:
        self._last_dialled = to
        self._commands.append(Dial(to))
        self._call = _Call(remote=to)
        self._dial = ""
        self._muted = False
        self._state = PanelState.CALLING

    def _on_ready(self, _: str, now: float) -> None:
        if self._call is not None:
            return
        self._setup_requested = True
        self._commands.append(Setup())
        self._state = PanelState.CONNECTING

    def _on_accept_dialing(self, name: str, now: float) -> None:
        if self._dial:
            self._dial_now()
        else:  # handset lifted, nothing typed
            self._on_redial(name, now)

    def _on_redial(self, _: str, now: float) -> None:
        # Accept with nothing typed calls the last number again (a desk
        # phone's Redial key); nothing happens before the first call.
        if self._last_dialled and now - self._call_ended_at >= _REDIAL_GUARD_S:
            self._place_call(self._last_dialled)

    def _on_hook_up_idle(self, _: str, now: float) -> None:
        self._state = PanelState.DIALING

    def _on_delete(self, _: str, now: float) -> None:
        self._dial = self._dial[:-1]
        if not self._dial:
            self._state = PanelState.IDLE

    def _on_clear(self, _: str, now: float) -> None:
        self._dial = ""
        self._state = PanelState.IDLE

    def _on_answer(self, _: str, now: float) -> None:
        self._commands.append(Accept())
        self._muted = False
        if self._call is not None:
            self._call.started_at = now
        self._state = PanelState.IN_CALL

    def _on_reject(self, _: str, now: float) -> None:
        self._commands.append(Reject())
        self._end_call()

    def _on_hangup(self, _: str, now: float) -> None:
        self._commands.append(Hangup())
        self._end_call()

    def _on_mute(self, _: str, now: float) -> None:
        self._muted = not self._muted
        self._commands.append(SetMute(self._muted))

    def _on_dismiss_error(self, _: str, now: float) -> None:
        self._error = None
        if self._call is not None and self._call.started_at is not None:
            # Hangup on the error screen during a call still ends the call.
            self._commands.append(Hangup())
            self._call = None
        self._resume()

    # --- helpers ------------------------------------------------------------

    def _change_volume(self, delta: int, now: float) -> None:
        # Like a desk phone: the keys set the handset/speaker volume while the
        # user is listening to it (dialing with its key tones, ringback, a
        # call) and the ringer volume otherwise.
        call_audio = self._state in (
            PanelState.DIALING,
            PanelState.CALLING,
            PanelState.IN_CALL,
        ) or (self._call is not None and self._call.started_at is not None)
        role = "speaker" if call_audio else "ringtone"
        level = min(max(self._volume[role] + delta, _min_level(role)), VOLUME_MAX_LEVEL)
        self._volume_shown = role
        self._volume_until = now + _VOLUME_SHOW_S
        if level != self._volume[role]:
            self._volume[role] = level
            self._commands.append(SetVolume(role, level, volume_gain(level)))

    def _call_gone(self) -> None:
        if self._state is PanelState.ERROR:
            self._call = None
            self._muted = False
            self._call_ended_at = self._now
            return
        if self._call is not None:
            self._end_call()

    def _end_call(self) -> None:
        self._call_ended_at = self._now
        self._call = None
        self._muted = False
        self._dial = ""
        if self._provisioning is not None:
            self._state = PanelState.PROVISIONING
        else:
            self._state = PanelState.IDLE if self._registered else PanelState.OFFLINE

    def _resume(self) -> None:
        if self._call is not None and self._call.started_at is not None:
            self._state = PanelState.IN_CALL
        elif self._provisioning is not None:
            self._call = None
            self._state = PanelState.PROVISIONING
        else:
            self._call = None
            self._state = PanelState.IDLE if self._registered else PanelState.OFFLINE


def _min_level(role: str) -> int:
    return 0 if role == "ringtone" else 1


_S = PanelState
_B = PanelButton

#: Where holding Hangup (or ``provision reset``) offers to reset provisioning.
_RESET_FROM = frozenset({_S.IDLE, _S.OFFLINE, _S.PROVISIONING, _S.ERROR})
#: The states whose screen an update in progress replaces.
_UPDATE_OVER = (_S.OFFLINE, _S.CONNECTING, _S.IDLE)

#: Keypad: one handler per state (states not listed ignore keys).
_KEY_TABLE: dict[PanelState, _Handler] = {
    _S.IDLE: Panel._start_dialing,
    _S.DIALING: Panel._type_digit,
    _S.IN_CALL: Panel._send_dtmf,
    _S.CONFIRM_RESET: Panel._on_reset_cancel,
    _S.CALL_LOG: Panel._on_log_key,
}

#: Buttons: (state, button) -> handler. Volume is handled in every state.
_BUTTON_TABLE: dict[tuple[PanelState, PanelButton], _Handler] = {
    (_S.OFFLINE, _B.READY): Panel._on_ready,
    (_S.ERROR, _B.READY): Panel._on_ready,
    (_S.IDLE, _B.HOOK_UP): Panel._on_hook_up_idle,
    (_S.IDLE, _B.ACCEPT): Panel._on_redial,
    (_S.DIALING, _B.ACCEPT): Panel._on_accept_dialing,
    (_S.DIALING, _B.HANGUP): Panel._on_delete,
    (_S.DIALING, _B.HANGUP_HELD): Panel._on_clear,
    (_S.DIALING, _B.HOOK_DOWN): Panel._on_clear,
    (_S.RINGING, _B.ACCEPT): Panel._on_answer,
    (_S.RINGING, _B.HOOK_UP): Panel._on_answer,
    (_S.RINGING, _B.HANGUP): Panel._on_reject,
    (_S.CALLING, _B.HANGUP): Panel._on_hangup,
    (_S.CALLING, _B.HOOK_DOWN): Panel._on_hangup,
    (_S.IN_CALL, _B.HANGUP): Panel._on_hangup,
    (_S.IN_CALL, _B.HOOK_DOWN): Panel._on_hangup,
    (_S.IN_CALL, _B.MUTE): Panel._on_mute,
    (_S.ERROR, _B.HANGUP): Panel._on_dismiss_error,
    # The call log (Mute on the idle screen) and do-not-disturb (hold #).
    (_S.IDLE, _B.MUTE): Panel._on_log_open,
    (_S.CALL_LOG, _B.MUTE): Panel._on_log_next,
    (_S.CALL_LOG, _B.ACCEPT): Panel._on_log_call,
    (_S.CALL_LOG, _B.HOOK_UP): Panel._on_log_call,
    (_S.CALL_LOG, _B.HANGUP): Panel._on_log_close,
    (_S.CALL_LOG, _B.HOOK_DOWN): Panel._on_log_close,
    (_S.IDLE, _B.DND): Panel._on_dnd_toggle,
    (_S.OFFLINE, _B.DND): Panel._on_dnd_toggle,
    # Reset provisioning: hold Hangup to be asked, hold it 3 s to confirm.
    (_S.IDLE, _B.HANGUP_HELD): Panel._on_reset_prompt,
    (_S.OFFLINE, _B.HANGUP_HELD): Panel._on_reset_prompt,
    (_S.PROVISIONING, _B.HANGUP_HELD): Panel._on_reset_prompt,
    (_S.CONFIRM_RESET, _B.HANGUP): Panel._on_reset_hold,
    (_S.CONFIRM_RESET, _B.HANGUP_RELEASED): Panel._on_reset_release,
    **{
        (_S.CONFIRM_RESET, b): Panel._on_reset_cancel
        for b in (_B.READY, _B.ACCEPT, _B.MUTE, _B.HOOK_UP, _B.HOOK_DOWN)
    },
}
