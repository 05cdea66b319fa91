"""The panel's call log, missed calls, clock, bars and do-not-disturb (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from appliance.calllog.core import Direction, Entry
from appliance.errors import ConfigError
from appliance.ui.calllog_view import (
    MINUTE_MARGIN_S,
    LogItem,
    bars_for,
    format_clock,
    log_item,
    until_next_minute,
)
from appliance.ui.commands import Decline, Dial, MarkMissedSeen, SetDnd
from appliance.ui.panel import Panel
from appliance.ui.view import PanelState, StatusLed

LOG = (
    LogItem("client:bob", "missed", "09:41", unseen=True),
    LogItem("+15551234", "in", "09:02", 75.0),
    LogItem("client:carol", "out", "02 Dec", 300.0),
)


def _idle(**options: object) -> Panel:
    panel = Panel(**options)  # type: ignore[arg-type]
    panel.button("ready", 0.0)
    panel.registered("alice", 0.1)
    panel.commands_to_send()
    return panel


def test_missed_calls_show_on_idle_and_blink_the_status_led_slowly() -> None:
    panel = _idle()
    assert panel.status_led() is StatusLed.STEADY
    panel.call_log(LOG, 1, 1.0)
    assert panel.view().missed_calls == 1
    assert panel.status_led() is StatusLed.SLOW


def test_mute_opens_the_log_marks_missed_seen_and_keys_scroll_it() -> None:
    panel = _idle()
    panel.call_log(LOG, 1, 1.0)
    panel.button("mute", 2.0)
    assert panel.state is PanelState.CALL_LOG
    assert panel.commands_to_send() == [MarkMissedSeen()]
    assert panel.view().missed_calls == 0
    assert panel.status_led() is StatusLed.STEADY
    assert panel.view().log_selected == 0
    panel.button("mute", 2.1)
    panel.key("8", 2.2)
    assert panel.view().log_selected == 2
    panel.key("8", 2.3)  # wraps to the newest
    assert panel.view().log_selected == 0
    panel.key("2", 2.4)
    assert panel.view().log_selected == 2
    panel.key("5", 2.5)  # other keys do nothing here
    assert panel.view().log_selected == 2
    assert panel.commands_to_send() == []


def test_accept_on_the_log_calls_the_selected_entry_back() -> None:
    panel = _idle()
    panel.call_log(LOG, 0, 1.0)
    panel.button("mute", 2.0)
    panel.button("mute", 2.1)
    assert panel.commands_to_send() == []  # nothing was unseen
    panel.button("accept", 2.2)
    assert panel.commands_to_send() == [Dial("+15551234")]
    assert panel.state is PanelState.CALLING


def test_hangup_leaves_the_log_and_an_empty_log_does_not_open() -> None:
    panel = _idle()
    panel.button("mute", 1.0)
    assert panel.state is PanelState.IDLE
    panel.call_log(LOG, 0, 1.5)
    panel.button("mute", 2.0)
    panel.button("hangup", 2.1)
    assert panel.state is PanelState.IDLE
    panel.button("mute", 3.0)
    panel.incoming("client:dave", {}, 3.1)  # a call comes while browsing
    assert panel.state is PanelState.RINGING


def test_hold_hash_toggles_dnd_and_incoming_calls_are_declined() -> None:
    panel = _idle()
    panel.key("#", 1.0)  # the press before the hold dials nothing
    panel.button("dnd", 2.0)
    assert panel.commands_to_send() == [SetDnd(True)]
    assert panel.view().dnd
    panel.incoming("client:bob", {}, 3.0)
    assert panel.commands_to_send() == [Decline(silent=False)]
    assert panel.state is PanelState.IDLE
    assert panel.ringer_pattern() is None
    panel.button("dnd", 4.0)
    assert panel.commands_to_send() == [SetDnd(False)]
    panel.incoming("client:bob", {}, 5.0)
    assert panel.state is PanelState.RINGING


def test_dnd_ignore_mode_and_a_saved_switch() -> None:
    panel = _idle(dnd_mode="ignore")
    panel.set_dnd(True, 1.0)
    assert panel.commands_to_send() == []
    panel.incoming("client:bob", {}, 2.0)
    assert panel.commands_to_send() == [Decline(silent=True)]
    with pytest.raises(ConfigError, match="dnd_mode"):
        Panel(dnd_mode="loud")


def test_clock_and_bars_reach_the_view() -> None:
    panel = _idle()
    assert (panel.view().clock_time, panel.view().clock_date) == format_clock(None)
    panel.clock("09:45", "Thu 03 Dec 2026", 1.0)
    panel.network_bars(2, 1.0)
    view = panel.view()
    assert (view.clock_time, view.clock_date, view.network_bars) == (
        "09:45",
        "Thu 03 Dec 2026",
        2,
    )


def test_format_clock() -> None:
    assert format_clock(None) == ("--:--", "clock not set")
    when = datetime(2026, 12, 3, 9, 5, tzinfo=UTC)
    assert format_clock(when) == ("09:05", "Thu 03 Dec 2026")


@pytest.mark.parametrize("offset_min", [0, 330, -180, 845])
def test_the_clock_redraw_falls_just_inside_the_next_minute(offset_min: int) -> None:
    zone = timezone(timedelta(minutes=offset_min))
    boundary = datetime(2026, 12, 3, 9, 46, tzinfo=UTC).timestamp()
    walls = [boundary + k * 7.31 for k in range(-20, 20)]
    walls += [boundary, boundary - 1e-6, boundary + 59.999, boundary - 0.04]
    for wall in walls:
        delay = until_next_minute(wall)
        assert MINUTE_MARGIN_S < delay <= 60.0 + MINUTE_MARGIN_S, wall
        shown = datetime.fromtimestamp(wall, zone)
        redrawn = datetime.fromtimestamp(wall + delay, zone)
        # The redraw shows the minute after the one shown, whatever the zone.
        assert (
            format_clock(redrawn)[0]
            == format_clock(
                shown.replace(second=0, microsecond=0) + timedelta(minutes=1)
            )[0]
        ), wall


@pytest.mark.parametrize(
    ("mos", "rtt", "bars"),
    [
        (4.3, None, 3),
        (3.7, 2.0, 2),  # the call's quality wins over the round trip
        (2.9, None, 1),
        (1.5, None, 0),
        (None, 0.05, 3),
        (None, 0.3, 2),
        (None, 0.7, 1),
        (None, 3.0, 0),
        (None, None, None),
    ],
)
def test_bars_for(mos: float | None, rtt: float | None, bars: int | None) -> None:
    assert bars_for(mos, rtt) == bars


def test_log_item_shows_time_today_date_before_and_dashes_without_clock() -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    entry = Entry(0.0, Direction.MISSED, "client:bob", seen=False)
    today = log_item(entry, now - timedelta(minutes=20), now)
    assert today == LogItem("client:bob", "missed", "09:40", 0.0, unseen=True)
    older = log_item(entry, now - timedelta(days=1), now)
    assert older.when == "02 Dec"
    unknown = Entry(0.0, Direction.OUTGOING, "x", clock_known=False)
    assert log_item(unknown, now, now).when == "--"
    assert log_item(unknown, now, now).kind == "out"
