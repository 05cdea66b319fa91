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
* What the panel holds and shows (its state, :meth:`Panel.view`, the LED and
  ringer queries, :meth:`Panel.next_deadline`) is :class:`PanelCore`
  (:mod:`appliance.ui.panel_core`); this file adds the inputs and the tables.
  The screens' vocabulary is :mod:`appliance.ui.view`, the volume levels
  :mod:`appliance.ui.volume`, the reset prompt's timers
  :mod:`appliance.ui.reset_confirm`.
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
``confirm_reset``: "Reset provisioning?", entered by holding Hangup when no
call is up or by ``appliance provision reset`` (:meth:`Panel.reset_requested`);
only holding Hangup for :data:`~appliance.ui.reset_confirm.RESET_HOLD_S` there
emits :class:`~appliance.ui.commands.ResetProvisioning`, any other button, a
call or :data:`~appliance.ui.reset_confirm.RESET_CONFIRM_S` without it emits
:class:`~appliance.ui.commands.ResetCancelled`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from appliance.ui.calllog_view import LogItem
from appliance.ui.commands import (
    Accept,
    Decline,
    Hangup,
    Ignore,
    MarkMissedSeen,
    PlayLocalDtmf,
    Reject,
    ResetCancelled,
    SendDigits,
    SetDnd,
    SetMute,
    Setup,
)
from appliance.ui.panel_core import PanelCall, PanelCore
from appliance.ui.view import PanelButton, PanelState

__all__ = ["DTMF_KEYS", "Panel"]

#: Keys of the 4x3 keypad, which are also the DTMF digits we send.
DTMF_KEYS = frozenset("0123456789*#")

#: Accept this soon after a call ended does not redial: it was meant for the
#: call that just ended (most often a ring the caller gave up a moment ago).
_REDIAL_GUARD_S = 2.0

_Handler = Callable[["Panel", str, float], None]


class Panel(PanelCore):
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
        self._volume.tick(now)
        if self._usb_result is not None and now >= self._usb_result_until:
            self._usb_result = None
        if self._state is PanelState.ERROR and now >= self._error_until:
            self._error = None
            self._resume()
        if self._state is PanelState.CONFIRM_RESET:
            outcome = self._reset.due(now)
            if outcome is not None:
                self._leave_confirm(outcome)
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
        self._call = PanelCall(remote=from_, params=dict(params), ring_started_at=now)
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

    def usb_result(self, message: str, code: int | None, now: float) -> None:
        """Show what reading a USB stick did (``Provisioned as alice``, or a
        refusal and its code) for the error display time, over any screen:
        like the volume bar it is a box on top, so a call, a ringing phone
        or the provisioning code stay where they are underneath.
        """
        self._now = now
        self._usb_result = (message, code)
        self._usb_result_until = now + self._error_display_s

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
            ValueError: ``role`` is not one of
                :data:`~appliance.ui.volume.VOLUME_ROLES`.
        """
        self._now = now
        command = self._volume.set(role, level)
        if command is not None:
            self._commands.append(command)

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
        self._reset.open(now)

    def _on_reset_hold(self, _: str, now: float) -> None:
        self._reset.hold(now)

    def _on_reset_release(self, _: str, now: float) -> None:
        self._reset.release()

    def _on_reset_cancel(self, _: str, now: float) -> None:
        self._leave_confirm(ResetCancelled())

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


_S = PanelState
_B = PanelButton

#: Where holding Hangup (or ``provision reset``) offers to reset provisioning.
_RESET_FROM = frozenset({_S.IDLE, _S.OFFLINE, _S.PROVISIONING, _S.ERROR})

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
