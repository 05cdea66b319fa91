"""Pure tests of the front-panel state machine (appliance.ui.panel)."""

import pytest

from appliance.cadence import Cadence, tones_for
from appliance.errors import ConfigError
from appliance.ui.commands import (
    Accept,
    Dial,
    Hangup,
    Ignore,
    PlayLocalDtmf,
    Reject,
    SendDigits,
    SetCountry,
    SetDirectory,
    SetMute,
    Setup,
    SetVolume,
)
from appliance.ui.panel import Panel
from appliance.ui.panel_core import MAX_DIRECTORY_ENTRIES
from appliance.ui.view import PanelState, Screen, StatusLed
from appliance.ui.volume import VOLUME_DEFAULT_LEVEL, VOLUME_MAX_LEVEL, volume_gain


def registered_panel(**options) -> Panel:
    panel = Panel(directory={"100": "alice", "7": "bob"}, **options)
    panel.button("ready", 0.0)
    panel.registered("carol", 0.5)
    panel.commands_to_send()
    return panel


def type_keys(panel: Panel, keys: str, now: float = 1.0) -> None:
    for key in keys:
        panel.key(key, now)


def ringing_panel(**options) -> Panel:
    panel = registered_panel(**options)
    panel.incoming("client:dave", {"topic": "sales"}, 10.0)
    return panel


def in_call_panel() -> Panel:
    panel = ringing_panel()
    panel.button("accept", 11.0)
    panel.commands_to_send()
    return panel


# --- setup and registration ---------------------------------------------------


def test_starts_offline_and_asks_for_ready():
    panel = Panel()
    view = panel.view()
    assert panel.state is PanelState.OFFLINE
    assert view.screen is Screen.OFFLINE
    assert not view.setup_requested
    assert panel.status_led() is StatusLed.SLOW


def test_ready_runs_setup_and_shows_the_result():
    panel = Panel()
    panel.button("ready", 0.0)
    assert panel.commands_to_send() == [Setup()]
    assert panel.state is PanelState.CONNECTING
    panel.registered("carol", 0.4)
    view = panel.view()
    assert view.screen is Screen.IDLE
    assert view.identity == "carol" and view.registered
    assert panel.status_led() is StatusLed.STEADY


def test_ready_while_registered_does_nothing():
    panel = registered_panel()
    panel.button("ready", 2.0)
    assert panel.commands_to_send() == []
    assert panel.state is PanelState.IDLE


def test_setup_failure_shows_the_error_then_offline():
    panel = Panel()
    panel.button("ready", 0.0)
    panel.error(20101, "Invalid Access Token", 1.0)
    view = panel.view()
    assert view.screen is Screen.ERROR
    assert (view.error_code, view.error_message) == (20101, "Invalid Access Token")
    assert panel.next_deadline() == pytest.approx(5.0)
    panel.tick(4.9)
    assert panel.state is PanelState.ERROR
    panel.tick(5.0)
    assert panel.state is PanelState.OFFLINE
    assert panel.view().error_code is None


def test_offline_shows_the_next_retry_and_recovers():
    panel = registered_panel()
    panel.unregistered(42.0, 30.0)
    view = panel.view()
    assert view.screen is Screen.OFFLINE
    assert view.next_retry_at == 42.0 and not view.registered
    assert panel.status_led() is StatusLed.SLOW
    panel.registered("carol", 42.5)
    assert panel.state is PanelState.IDLE
    assert panel.view().next_retry_at is None


def test_ready_while_offline_runs_setup_again():
    panel = registered_panel()
    panel.unregistered(None, 3.0)
    panel.button("ready", 4.0)
    assert panel.commands_to_send() == [Setup()]
    assert panel.state is PanelState.CONNECTING


def test_unregistered_during_a_call_keeps_the_call():
    panel = in_call_panel()
    panel.unregistered(60.0, 20.0)
    assert panel.state is PanelState.IN_CALL
    panel.disconnected(21.0)
    assert panel.state is PanelState.OFFLINE


def test_network_state_is_shown():
    panel = Panel()
    assert panel.view().network_up is None
    panel.network(False, 1.0)
    assert panel.view().network_up is False


# --- dialing ---------------------------------------------------------------------


def test_digits_build_the_dial_string():
    panel = registered_panel()
    type_keys(panel, "555*1")
    view = panel.view()
    assert view.screen is Screen.DIALING
    assert view.dial_string == "555*1"
    # Each key beeps locally while dialing; nothing goes to the engine yet.
    assert panel.commands_to_send() == [PlayLocalDtmf(k) for k in "555*1"]


def test_hash_alone_in_idle_does_nothing():
    panel = registered_panel()
    panel.key("#", 1.0)
    assert panel.state is PanelState.IDLE


def test_dial_string_is_capped_at_the_maximum_length():
    panel = registered_panel(max_dial_length=4)
    type_keys(panel, "123456")
    assert panel.view().dial_string == "1234"


def test_hangup_deletes_the_last_digit_then_returns_to_idle():
    panel = registered_panel()
    type_keys(panel, "12")
    panel.commands_to_send()  # the key tones
    panel.button("hangup", 2.0)
    assert panel.view().dial_string == "1"
    panel.button("hangup", 2.1)
    assert panel.state is PanelState.IDLE
    assert panel.commands_to_send() == []


def test_hangup_held_clears_the_dial_string():
    panel = registered_panel()
    type_keys(panel, "12345")
    panel.button("hangup_held", 3.0)
    assert panel.state is PanelState.IDLE
    assert panel.view().dial_string == ""


def test_hash_dials_a_number_as_typed():
    panel = registered_panel()
    type_keys(panel, "0044123#")
    assert panel.commands_to_send()[-2:] == [PlayLocalDtmf("#"), Dial("0044123")]
    view = panel.view()
    assert view.screen is Screen.CALLING
    assert view.remote == "0044123" and view.dial_string == ""


def test_accept_dials_too():
    panel = registered_panel()
    type_keys(panel, "5551234")
    panel.commands_to_send()  # the key tones
    panel.button("accept", 2.0)
    assert panel.commands_to_send() == [Dial("5551234")]


def test_accept_with_nothing_typed_does_nothing():
    panel = registered_panel()
    panel.button("accept", 2.0)
    panel.button("hook_up", 2.1)  # off hook: dialing with an empty string
    panel.button("accept", 2.2)
    assert panel.commands_to_send() == []
    assert panel.state is PanelState.DIALING


def test_directory_code_dials_a_client():
    panel = registered_panel()
    type_keys(panel, "100")
    assert panel.view().dial_match == "alice"
    panel.commands_to_send()  # the key tones
    panel.key("#", 2.0)
    assert panel.commands_to_send() == [PlayLocalDtmf("#"), Dial("client:alice")]
    assert panel.view().remote == "client:alice"


def test_an_edited_directory_dials_at_once_and_is_the_one_to_save():
    panel = registered_panel()
    assert panel.edited_directory is None  # still the configuration's
    assert panel.edit_directory("42", "erin", 1.5) is None
    assert panel.commands_to_send() == [
        SetDirectory((("100", "alice"), ("42", "erin"), ("7", "bob")))
    ]
    assert panel.edit_directory("100", None, 1.6) is None  # removed
    assert panel.edit_directory("7", "frank", 1.7) is None  # replaced
    assert panel.edited_directory == {"42": "erin", "7": "frank"}
    panel.commands_to_send()
    type_keys(panel, "42", 2.0)
    assert panel.view().dial_match == "erin"
    panel.commands_to_send()
    panel.key("#", 2.5)
    assert panel.commands_to_send() == [PlayLocalDtmf("#"), Dial("client:erin")]


@pytest.mark.parametrize(
    ("code", "name", "problem"),
    [
        ("4#", "erin", "code must be keypad digits or *"),
        ("", "erin", "code must be keypad digits or *"),
        ("4", "bad name", "invalid client name 'bad name'"),
        ("5", None, "no entry '5'"),
    ],
)
def test_a_bad_directory_edit_changes_nothing(code, name, problem):
    panel = registered_panel()
    assert panel.edit_directory(code, name, 1.5) == problem
    assert panel.commands_to_send() == []
    assert panel.edited_directory is None
    assert panel.directory == {"100": "alice", "7": "bob"}


def test_the_directory_is_bounded_once_edited():
    panel = Panel()
    for n in range(MAX_DIRECTORY_ENTRIES):
        assert panel.edit_directory(str(n), "x", 1.0) is None
    assert "at most" in (panel.edit_directory("999", "x", 1.0) or "")
    assert panel.edit_directory("0", "y", 1.0) is None  # replacing is fine


def test_a_restored_directory_drops_bad_entries_and_emits_nothing():
    panel = registered_panel()
    dropped = panel.restore_directory({"42": "erin", "4#": "x", "5": "bad name"})
    assert dropped == ["4#", "5"]
    assert panel.directory == panel.edited_directory == {"42": "erin"}
    assert panel.commands_to_send() == []
    assert Panel().restore_directory({}) == []


def test_reverting_brings_the_configured_directory_back():
    panel = registered_panel()
    assert panel.revert_directory(1.0) is False  # never edited: nothing to do
    assert panel.commands_to_send() == []
    panel.edit_directory("42", "erin", 1.5)
    panel.edit_directory("7", None, 1.6)
    panel.commands_to_send()
    assert panel.revert_directory(2.0) is True
    assert panel.commands_to_send() == [SetDirectory((("100", "alice"), ("7", "bob")))]
    assert panel.directory == {"100": "alice", "7": "bob"}
    assert panel.edited_directory is None  # the state file drops its copy
    restored = registered_panel()
    restored.restore_directory({"42": "erin"})
    assert restored.revert_directory(3.0) is True
    assert restored.directory == {"100": "alice", "7": "bob"}


def test_a_chosen_country_rings_at_once_and_is_the_one_to_save():
    panel = ringing_panel()
    assert (panel.country, panel.chosen_country) == ("US", None)
    assert panel.choose_country("gb", 10.5) is None
    assert panel.commands_to_send() == [SetCountry("GB")]
    assert (panel.country, panel.chosen_country) == ("GB", "GB")
    assert panel.ringer_pattern() == tones_for("GB").ring  # the ring in progress
    problem = panel.choose_country("XX", 11.0)
    assert problem is not None and problem.startswith("unknown country 'XX' (known:")
    assert panel.commands_to_send() == []
    assert panel.country == "GB"
    assert panel.choose_country("UK", 11.2) is None  # what people type
    assert panel.commands_to_send() == [SetCountry("GB")]
    assert panel.choose_country("FR", 11.5) is None
    assert panel.ringer_pattern() == tones_for("FR").ring
    # A fixed cadence stays; the country still changes (the tones).
    fixed = ringing_panel(ring_cadence=Cadence((100, 100)))
    assert fixed.choose_country("JP", 10.5) is None
    assert (fixed.country, fixed.ringer_pattern()) == ("JP", Cadence((100, 100)))


def test_a_restored_country_emits_nothing():
    panel = Panel(country="DE")
    assert panel.restore_country("fr") is None
    assert (panel.country, panel.chosen_country) == ("FR", "FR")
    assert panel.commands_to_send() == []
    assert panel.restore_country("nowhere") is not None
    assert panel.country == "FR"


def test_hook_down_while_dialing_clears():
    panel = registered_panel()
    type_keys(panel, "12")
    panel.button("hook_down", 2.0)
    assert panel.state is PanelState.IDLE


def test_digits_are_ignored_while_offline():
    panel = Panel()
    type_keys(panel, "123")
    assert panel.view().dial_string == ""
    assert panel.state is PanelState.OFFLINE


def test_unregistered_while_dialing_goes_offline():
    panel = registered_panel()
    type_keys(panel, "12")
    panel.unregistered(10.0, 2.0)
    assert panel.state is PanelState.OFFLINE
    assert panel.view().dial_string == ""


@pytest.mark.parametrize(
    ("directory", "key"),
    [({"1#": "alice"}, "ui.directory.1#"), ({"1": "bad name"}, "ui.directory.1")],
)
def test_invalid_directory_is_a_config_error(directory, key):
    with pytest.raises(ConfigError) as info:
        Panel(directory=directory)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_dial_length", 0), ("ignore_after_rings", 0), ("error_display_s", 0)],
)
def test_invalid_options_are_config_errors(option, value):
    with pytest.raises(ConfigError) as info:
        Panel(**{option: value})
    assert info.value.key == f"ui.{option}"


def test_bad_key_and_button_names_raise():
    panel = Panel()
    with pytest.raises(ValueError, match="keypad"):
        panel.key("A", 0.0)
    with pytest.raises(ValueError):
        panel.button("redial", 0.0)


# --- outgoing call -------------------------------------------------------------


def dialed_panel() -> Panel:
    panel = registered_panel()
    type_keys(panel, "7#")
    panel.commands_to_send()
    return panel


def test_outgoing_call_progress_then_answer():
    panel = dialed_panel()
    panel.outgoing_started("client:bob", 2.0)
    panel.ringing(2.5)
    view = panel.view()
    assert view.screen is Screen.CALLING and view.remote_ringing
    panel.accepted(5.0)
    view = panel.view()
    assert view.screen is Screen.IN_CALL
    assert view.call_started_at == 5.0
    assert panel.ringer_pattern() is None


def test_hangup_while_calling_cancels():
    panel = dialed_panel()
    panel.button("hangup", 3.0)
    assert panel.commands_to_send() == [Hangup()]
    assert panel.state is PanelState.IDLE
    panel.disconnected(3.2)  # the engine's confirmation is harmless
    assert panel.state is PanelState.IDLE


def test_rejected_outgoing_call_returns_to_idle():
    panel = dialed_panel()
    panel.rejected(3.0)
    assert panel.state is PanelState.IDLE
    assert panel.view().remote == ""


def test_error_while_calling_fails_the_call():
    panel = dialed_panel()
    panel.error(31486, "Busy here", 3.0)
    assert panel.view().screen is Screen.ERROR
    panel.tick(7.0)
    assert panel.state is PanelState.IDLE


# --- incoming call -------------------------------------------------------------


def test_incoming_call_rings_with_caller_id_and_params():
    panel = ringing_panel()
    view = panel.view()
    assert view.screen is Screen.RINGING
    assert view.remote == "client:dave"
    assert view.params == (("topic", "sales"),)
    assert panel.ringer_pattern() == tones_for("US").ring
    assert panel.ring_started_at() == 10.0
    assert panel.status_led() is StatusLed.FAST


def test_ring_cadence_follows_the_country():
    panel = ringing_panel(country="GB")
    assert panel.ringer_pattern() == Cadence((400, 200, 400, 2000))


def test_accept_answers():
    panel = ringing_panel()
    panel.button("accept", 12.0)
    assert panel.commands_to_send() == [Accept()]
    view = panel.view()
    assert view.screen is Screen.IN_CALL and view.call_started_at == 12.0
    assert panel.ringer_pattern() is None
    assert panel.status_led() is StatusLed.STEADY
    panel.accepted(12.3)  # the engine confirms; the timer keeps its start
    assert panel.view().call_started_at == 12.0


def test_lifting_the_handset_answers():
    panel = ringing_panel()
    panel.button("hook_up", 12.0)
    assert panel.commands_to_send() == [Accept()]


def test_hangup_rejects():
    panel = ringing_panel()
    panel.button("hangup", 12.0)
    assert panel.commands_to_send() == [Reject()]
    assert panel.state is PanelState.IDLE
    assert panel.ringer_pattern() is None


def test_caller_cancelling_stops_the_ringer():
    panel = ringing_panel()
    panel.cancelled(13.0)
    assert panel.state is PanelState.IDLE
    assert panel.ringer_pattern() is None
    assert panel.commands_to_send() == []


def test_digits_while_ringing_are_ignored():
    panel = ringing_panel()
    type_keys(panel, "12")
    assert panel.commands_to_send() == []
    assert panel.state is PanelState.RINGING


def test_ignore_after_n_rings():
    panel = ringing_panel(ignore_after_rings=3)  # US: 6 s per ring
    assert panel.next_deadline() == pytest.approx(10.0 + 18.0)
    panel.tick(27.9)
    assert panel.commands_to_send() == []
    panel.tick(28.0)
    assert panel.commands_to_send() == [Ignore()]
    assert panel.state is PanelState.IDLE
    assert panel.next_deadline() is None


def test_no_auto_ignore_by_default():
    panel = ringing_panel()
    assert panel.next_deadline() is None
    panel.tick(1000.0)
    assert panel.state is PanelState.RINGING


def test_second_incoming_call_while_busy_is_left_to_the_engine():
    panel = in_call_panel()
    panel.incoming("client:eve", {}, 20.0)
    view = panel.view()
    assert view.screen is Screen.IN_CALL and view.remote == "client:dave"


def test_incoming_call_while_dialing_rings():
    panel = registered_panel()
    type_keys(panel, "12")
    panel.incoming("+15551234", {}, 3.0)
    assert panel.state is PanelState.RINGING
    assert panel.view().dial_string == ""


def test_engine_accepted_while_ringing_moves_to_call():
    panel = ringing_panel()
    panel.accepted(11.0)
    assert panel.state is PanelState.IN_CALL


# --- in call --------------------------------------------------------------------


def test_keys_in_call_send_dtmf_and_leave_the_tone_to_the_engine():
    panel = in_call_panel()
    type_keys(panel, "1#", now=20.0)
    # Connection.send_digits plays the local tone itself (as sendDigits does).
    assert panel.commands_to_send() == [SendDigits("1"), SendDigits("#")]


def test_mute_toggles():
    panel = in_call_panel()
    panel.button("mute", 20.0)
    assert panel.view().muted
    panel.button("mute", 21.0)
    assert panel.commands_to_send() == [SetMute(True), SetMute(False)]
    assert not panel.view().muted


def test_mute_outside_a_call_does_nothing():
    panel = registered_panel()
    panel.button("mute", 2.0)
    assert panel.commands_to_send() == []


def test_hangup_ends_the_call():
    panel = in_call_panel()
    panel.button("mute", 20.0)
    panel.button("hangup", 30.0)
    assert panel.commands_to_send() == [SetMute(True), Hangup()]
    view = panel.view()
    assert view.screen is Screen.IDLE and not view.muted
    assert view.call_started_at is None


def test_hanging_up_the_handset_ends_the_call():
    panel = in_call_panel()
    panel.button("hook_down", 30.0)
    assert panel.commands_to_send() == [Hangup()]


def test_remote_disconnect_returns_to_idle():
    panel = in_call_panel()
    panel.disconnected(40.0)
    assert panel.state is PanelState.IDLE


def test_view_timer_uses_the_latest_time():
    panel = in_call_panel()
    panel.tick(71.0)
    view = panel.view()
    assert view.call_started_at is not None
    assert view.now - view.call_started_at == pytest.approx(60.0)


def test_volume_keys_set_the_ringer_when_no_call_is_up():
    panel = Panel()
    panel.button("vol_up", 0.0)
    level = VOLUME_DEFAULT_LEVEL + 1
    assert panel.commands_to_send() == [
        SetVolume("ringtone", level, volume_gain(level))
    ]
    assert panel.volume_levels() == {"speaker": VOLUME_DEFAULT_LEVEL, "ringtone": level}
    ringing = ringing_panel()
    ringing.button("vol_down", 11.0)
    commands = ringing.commands_to_send()
    assert [c.role if isinstance(c, SetVolume) else c for c in commands] == ["ringtone"]


def test_volume_keys_set_the_call_volume_while_calling_or_in_a_call():
    panel = in_call_panel()
    panel.button("vol_down", 20.0)
    level = VOLUME_DEFAULT_LEVEL - 1
    assert panel.commands_to_send() == [SetVolume("speaker", level, volume_gain(level))]
    calling = registered_panel()
    type_keys(calling, "7#")
    calling.commands_to_send()
    calling.button("vol_up", 2.0)
    commands = calling.commands_to_send()
    assert [c.role if isinstance(c, SetVolume) else c for c in commands] == ["speaker"]


def test_volume_keys_while_dialing_set_what_the_user_hears_the_key_tones_on():
    panel = registered_panel()
    type_keys(panel, "5", 1.0)
    panel.commands_to_send()
    panel.button("vol_down", 1.5)
    commands = panel.commands_to_send()
    assert [c.role if isinstance(c, SetVolume) else c for c in commands] == ["speaker"]


def test_volume_levels_are_clamped_and_the_ringer_can_be_silenced():
    panel = in_call_panel()
    for _ in range(20):
        panel.button("vol_down", 20.0)
    assert panel.volume_levels()["speaker"] == 1  # a call never goes silent
    for _ in range(20):
        panel.button("vol_up", 20.0)
    assert panel.volume_levels()["speaker"] == VOLUME_MAX_LEVEL
    # Steps beyond the ends change nothing and send nothing more.
    assert (
        len(panel.commands_to_send()) == VOLUME_DEFAULT_LEVEL - 1 + VOLUME_MAX_LEVEL - 1
    )
    idle = Panel()
    for _ in range(20):
        idle.button("vol_down", 0.0)
    assert idle.volume_levels()["ringtone"] == 0
    assert idle.commands_to_send()[-1] == SetVolume("ringtone", 0, 0.0)
    assert idle.view().ringer_off  # shown in the status bar from now on
    idle.tick(100.0)
    assert idle.view().ringer_off and not idle.view().volume_role
    assert not Panel(volume={"ringtone": 1}).view().ringer_off


def test_volume_gain_steps_are_3_db_and_level_6_is_unity():
    assert volume_gain(VOLUME_DEFAULT_LEVEL) == 1.0
    assert volume_gain(0) == 0.0
    assert volume_gain(8) == pytest.approx(10 ** (6 / 20))
    assert volume_gain(1) == pytest.approx(10 ** (-15 / 20))


def test_volume_box_shows_for_two_seconds_after_the_last_press():
    panel = registered_panel()
    panel.button("vol_up", 10.0)
    assert (panel.view().volume_role, panel.view().volume_level) == ("ringtone", 7)
    panel.button("vol_up", 11.0)
    assert panel.next_deadline() == 13.0
    panel.tick(12.9)
    assert panel.view().volume_role == "ringtone"
    panel.tick(13.0)
    assert panel.view().volume_role == ""
    assert panel.next_deadline() is None


def test_saved_volume_levels_are_used_and_clamped():
    panel = Panel(volume={"speaker": 3, "ringtone": 99})
    assert panel.volume_levels() == {"speaker": 3, "ringtone": VOLUME_MAX_LEVEL}
    with pytest.raises(ConfigError, match=r"volume\.headset"):
        Panel(volume={"headset": 3})
    with pytest.raises(ConfigError, match=r"volume\.speaker"):
        Panel(volume={"speaker": "loud"})  # type: ignore[dict-item]


# --- errors during a call ----------------------------------------------------------


def test_error_during_a_call_shows_then_returns_to_the_call():
    panel = in_call_panel()
    panel.error(31000, "An unknown error has occurred", 20.0)
    assert panel.view().screen is Screen.ERROR
    assert panel.view().call_started_at == 11.0
    panel.tick(24.0)
    assert panel.state is PanelState.IN_CALL


def test_hangup_on_the_error_screen_ends_the_call():
    panel = in_call_panel()
    panel.error(31000, "oops", 20.0)
    panel.button("hangup", 21.0)
    assert panel.commands_to_send() == [Hangup()]
    assert panel.state is PanelState.IDLE


def test_hangup_dismisses_an_error_early():
    panel = registered_panel()
    panel.error(31005, "Connection error", 2.0)
    panel.button("hangup", 2.5)
    assert panel.commands_to_send() == []
    assert panel.state is PanelState.IDLE


def test_disconnect_during_error_is_remembered():
    panel = in_call_panel()
    panel.error(31000, "oops", 20.0)
    panel.disconnected(21.0)
    panel.tick(30.0)
    assert panel.state is PanelState.IDLE


def test_incoming_call_replaces_an_error():
    panel = registered_panel()
    panel.error(31005, "Connection error", 2.0)
    panel.incoming("client:dave", {}, 2.5)
    view = panel.view()
    assert view.screen is Screen.RINGING and view.error_code is None


def test_ready_on_the_error_screen_during_a_call_is_ignored():
    panel = in_call_panel()
    panel.error(31000, "oops", 20.0)
    panel.button("ready", 21.0)
    assert panel.commands_to_send() == []


def test_drain_is_idempotent():
    panel = Panel()
    panel.button("ready", 0.0)
    assert panel.commands_to_send() == [Setup()]
    assert panel.commands_to_send() == []


def test_accept_with_nothing_typed_redials_the_last_number():
    panel = registered_panel()
    panel.button("accept", 1.0)
    assert panel.commands_to_send() == [] and panel.state is PanelState.IDLE
    type_keys(panel, "100#", 2.0)
    assert panel.commands_to_send()[-1] == Dial("client:alice")
    panel.accepted(3.0)
    panel.button("hangup", 4.0)
    panel.commands_to_send()
    panel.button("accept", 5.0)  # 1 s after the call: meant for that call
    assert panel.commands_to_send() == []
    panel.button("accept", 6.0)
    assert panel.commands_to_send() == [Dial("client:alice")]
    assert panel.state is PanelState.CALLING
    assert panel.view().remote == "client:alice"


def test_accept_meant_for_a_ring_that_just_stopped_does_not_call_out():
    panel = registered_panel()
    type_keys(panel, "7#", 1.0)
    panel.rejected(2.0)
    panel.incoming("client:dave", {}, 10.0)
    panel.cancelled(11.9)  # dave gave up as the user reached for Accept
    panel.commands_to_send()
    panel.button("accept", 12.0)
    assert panel.commands_to_send() == [] and panel.state is PanelState.IDLE


def test_handset_lifted_then_accept_redials():
    panel = registered_panel()
    type_keys(panel, "7#", 1.0)
    panel.rejected(2.0)
    panel.commands_to_send()
    panel.button("hook_up", 10.0)
    assert panel.state is PanelState.DIALING
    panel.button("accept", 10.5)
    assert panel.commands_to_send() == [Dial("client:bob")]


def test_a_new_identity_forgets_the_last_number():
    panel = registered_panel()
    type_keys(panel, "7#", 1.0)
    panel.rejected(2.0)
    panel.registered("someone-else", 3.0)  # the phone was provisioned anew
    panel.commands_to_send()
    panel.button("accept", 10.0)
    assert panel.commands_to_send() == []


# --- remote updates -------------------------------------------------------------


def test_an_update_shows_over_idle_but_never_over_a_call():
    panel = registered_panel()
    panel.update_shown("Downloading", "1.2.0", 0.25, now=2.0)
    view = panel.view()
    assert view.screen is Screen.UPDATING
    assert (view.update_status, view.update_version, view.update_progress) == (
        "Downloading",
        "1.2.0",
        0.25,
    )
    panel.key("5", 3.0)  # dialling keeps its screen
    assert panel.view().screen is Screen.DIALING
    panel.button("hangup_held", 3.5)
    assert panel.view().screen is Screen.UPDATING
    panel.incoming("client:dave", {}, 4.0)
    assert panel.view().screen is Screen.RINGING
    panel.button("accept", 5.0)
    panel.accepted(5.5)
    assert panel.view().screen is Screen.IN_CALL
    assert panel.state is PanelState.IN_CALL  # the panel itself is unchanged
    panel.update_shown("", now=6.0)
    panel.button("hangup", 7.0)
    panel.disconnected(7.5)
    view = panel.view()
    assert view.screen is Screen.IDLE and view.update_status == ""
