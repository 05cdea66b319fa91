"""What the front panel holds and shows: its state, queries and shared moves.

:class:`PanelCore` is the half of the panel state machine that does not depend
on the inputs: the validated options, the state every transition reads and
writes, what the screens and LEDs are told (:meth:`PanelCore.view` builds the
:class:`~appliance.ui.view.PanelView`), when the adapter must tick, and the few
moves many transitions share (place a call, end it, resume after an error or
a prompt). :class:`appliance.ui.panel.Panel` adds the inputs and the
transition tables on top. Same rules: no I/O, no clock; time comes in as
``now``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.cadence import COUNTRIES, Cadence, tones_for
from appliance.errors import ConfigError
from appliance.ui.calllog_view import DND_MODES, DeskState
from appliance.ui.commands import (
    Command,
    Dial,
    ResetCancelled,
    ResetProvisioning,
    SetCountry,
    SetDirectory,
)
from appliance.ui.reset_confirm import ResetConfirm
from appliance.ui.view import PanelState, PanelView, Screen, StatusLed
from appliance.ui.volume import Volume

__all__ = ["MAX_DIRECTORY_ENTRIES", "PanelCall", "PanelCore", "directory_problem"]

# A directory code is what can be typed on the keypad (no '#': it dials).
_CODE_RE = re.compile(r"[0-9*]{1,32}")
# Twilio client identities: letters, digits and underscores (Access Token docs).
_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,121}")
#: Entries the directory may hold once edited on the page (the state file
#: stays small; the configuration's own directory is not bounded).
MAX_DIRECTORY_ENTRIES = 100


def directory_problem(code: str, name: str) -> str | None:
    """Why ``code`` -> ``name`` cannot be a directory entry (None: it can)."""
    if not _CODE_RE.fullmatch(code):
        return "code must be keypad digits or *"
    if not _NAME_RE.fullmatch(name):
        return f"invalid client name {name!r}"
    return None


@dataclass
class PanelCall:
    """The call on the panel: who, since when, and whether it rings there."""

    remote: str = ""
    params: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    ring_started_at: float = 0.0
    remote_ringing: bool = False


class PanelCore:
    """The panel's state and queries; see :class:`appliance.ui.panel.Panel`.

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
        #: ``[ui.directory]``, which reverting an edited directory brings back.
        self._configured_directory = dict(self._directory)
        for code, name in self._directory.items():
            problem = directory_problem(code, name)
            if problem is not None:
                raise ConfigError(f"ui.directory.{code}", problem)
        #: Set once the directory is edited (then saved in the state file).
        self._directory_edited = False
        if max_dial_length < 1:
            raise ConfigError("ui.max_dial_length", "must be at least 1")
        if ignore_after_rings is not None and ignore_after_rings < 1:
            raise ConfigError("ui.ignore_after_rings", "must be at least 1")
        if error_display_s <= 0:
            raise ConfigError("ui.error_display_s", "must be positive")
        if dnd_mode not in DND_MODES:
            raise ConfigError("ui.dnd_mode", f"must be one of {', '.join(DND_MODES)}")
        self._desk = DeskState(dnd_silent=dnd_mode == "ignore")
        self._ring_override = ring_cadence
        self._country = tones_for(country).country
        self._ring = ring_cadence or tones_for(country).ring
        #: Set once the country is chosen (then saved in the state file).
        self._country_chosen = False
        self._max_dial = max_dial_length
        self._ignore_after = ignore_after_rings
        self._error_display_s = error_display_s
        self._volume = Volume(volume)

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
        self._call: PanelCall | None = None
        self._muted = False
        self._error: tuple[int, str] | None = None
        self._error_until = 0.0
        self._provisioning: tuple[str, str, str] | None = None
        #: Whether this phone can be reset (it is provisioned by a provisioner).
        self.reset_enabled = False
        self._reset = ResetConfirm()
        self._update: tuple[str, str, float | None, str] | None = None
        #: What reading a USB stick did, shown over any screen until the time.
        self._usb_result: tuple[str, int | None] | None = None
        self._usb_result_until = 0.0

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
            ringer_off=self._volume.level("ringtone") == 0,
            volume_role=self._volume.shown,
            volume_level=self._volume.level(self._volume.shown),
            provisioning_code=self._provisioning[0] if self._provisioning else "",
            provisioning_uri=self._provisioning[1] if self._provisioning else "",
            provisioning_message=self._provisioning[2] if self._provisioning else "",
            reset_hold_until=self._reset.hold_until,
            update_status=update[0],
            update_version=update[1],
            update_progress=update[2],
            update_reason=update[3],
            usb_message=self._usb_result[0] if self._usb_result else "",
            usb_code=self._usb_result[1] if self._usb_result else None,
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
        return self._volume.levels()

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
        volume_until = self._volume.next_deadline()
        if volume_until is not None:
            deadlines.append(volume_until)
        if self._usb_result is not None:
            deadlines.append(self._usb_result_until)
        if self._state is PanelState.ERROR:
            deadlines.append(self._error_until)
        elif self._state is PanelState.CONFIRM_RESET:
            deadlines.extend(self._reset.deadlines())
        elif (
            self._state is PanelState.RINGING
            and self._ignore_after is not None
            and self._call is not None
        ):
            deadlines.append(
                self._call.ring_started_at + self._ignore_after * self._ring.period_s
            )
        return min(deadlines, default=None)

    @property
    def dnd(self) -> bool:
        """Whether do-not-disturb is on."""
        return self._desk.dnd

    # --- the directory (the configuration's, or as edited on the page) -----

    @property
    def directory(self) -> dict[str, str]:
        """Dial code -> client name, as dialled now."""
        return dict(self._directory)

    @property
    def edited_directory(self) -> dict[str, str] | None:
        """The directory to keep in the state file; None while it is still
        the configuration's (so a later edit of ``[ui.directory]`` applies)."""
        return dict(self._directory) if self._directory_edited else None

    def restore_directory(self, entries: Mapping[str, str]) -> list[str]:
        """Replace the directory by the one saved after an edit (at start; no
        command). Returns the codes of entries dropped as invalid."""
        kept = {
            code: name
            for code, name in entries.items()
            if directory_problem(code, name) is None
        }
        dropped = [code for code in entries if code not in kept]
        self._directory = dict(list(kept.items())[:MAX_DIRECTORY_ENTRIES])
        self._directory_edited = True
        return dropped

    def edit_directory(self, code: str, name: str | None, now: float) -> str | None:
        """Set ``code`` to ``name`` (None: remove it); say why not, or None.

        Emits :class:`~appliance.ui.commands.SetDirectory` (to be saved).
        """
        self._now = now
        if name is None:
            if code not in self._directory:
                return f"no entry {code!r}"
            del self._directory[code]
        else:
            problem = directory_problem(code, name)
            if problem is not None:
                return problem
            if (
                code not in self._directory
                and len(self._directory) >= MAX_DIRECTORY_ENTRIES
            ):
                return f"the directory holds at most {MAX_DIRECTORY_ENTRIES} entries"
            self._directory[code] = name
        self._directory_edited = True
        self._commands.append(SetDirectory(tuple(sorted(self._directory.items()))))
        return None

    def revert_directory(self, now: float) -> bool:
        """Go back to ``[ui.directory]`` after edits; False when not edited.

        Emits :class:`~appliance.ui.commands.SetDirectory` (the saved copy is
        dropped from the state file, so a later ``[ui.directory]`` applies).
        """
        self._now = now
        if not self._directory_edited:
            return False
        self._directory = dict(self._configured_directory)
        self._directory_edited = False
        self._commands.append(SetDirectory(tuple(sorted(self._directory.items()))))
        return True

    # --- the country of the tones (the configuration's, or as chosen) -------

    @property
    def country(self) -> str:
        """The country whose ring and call-progress tones the phone plays."""
        return self._country

    @property
    def chosen_country(self) -> str | None:
        """The country to keep in the state file; None while it is still the
        configuration's (so a later edit of ``ui.country`` applies)."""
        return self._country if self._country_chosen else None

    def _set_country(self, country: str) -> str | None:
        tones = COUNTRIES.get(country.strip().upper())
        if tones is None:
            known = ", ".join(sorted(COUNTRIES))
            return f"unknown country {country!r} (known: {known})"
        self._country = tones.country  # "UK" is GB
        self._ring = self._ring_override or tones.ring
        self._country_chosen = True
        return None

    def restore_country(self, country: str) -> str | None:
        """Use the country saved after a choice (at start; no command).
        Returns why it cannot be used, or None."""
        return self._set_country(country)

    def choose_country(self, country: str, now: float) -> str | None:
        """Choose the tones' country (the web page); say why not, or None.

        The next ring and call-progress tone use it. Emits
        :class:`~appliance.ui.commands.SetCountry` (to be saved).
        """
        self._now = now
        problem = self._set_country(country)
        if problem is None:
            self._commands.append(SetCountry(self._country))
        return problem

    # --- moves many transitions share -------------------------------------

    def _leave_confirm(self, outcome: ResetProvisioning | ResetCancelled) -> None:
        self._commands.append(outcome)
        self._reset.release()
        self._resume()

    def _place_call(self, to: str) -> None:
        self._last_dialled = to
        self._commands.append(Dial(to))
        self._call = PanelCall(remote=to)
        self._dial = ""
        self._muted = False
        self._state = PanelState.CALLING

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
        command = self._volume.change(role, delta, now)
        if command is not None:
            self._commands.append(command)

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


_S = PanelState
#: The states whose screen an update in progress replaces.
_UPDATE_OVER = (_S.OFFLINE, _S.CONNECTING, _S.IDLE)
