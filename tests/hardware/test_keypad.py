"""Pure tests of the matrix scanner and the debouncer (no GPIO, no clock)."""

import pytest

from appliance.hardware.keypad import (
    Debouncer,
    KeyHeld,
    KeypadScanner,
    KeyPressed,
    KeyReleased,
)

# Row/column of some keys in the 4x3 layout ("123", "456", "789", "*0#").
POS = {"1": (0, 0), "2": (0, 1), "3": (0, 2), "4": (1, 0), "5": (1, 1), "#": (3, 2)}


def sweep(scanner: KeypadScanner, down: set[str], now: float) -> None:
    """One full sweep with the keys `down` closed (as seen electrically)."""
    for row in range(scanner.rows):
        cols = {POS[k][1] for k in down if POS[k][0] == row}
        scanner.scan_result(row, cols, now)


def run(scanner: KeypadScanner, down: set[str], start: float, end: float, step=0.005):
    steps = round((end - start) / step)
    for i in range(steps + 1):
        sweep(scanner, down, round(start + i * step, 6))
    return scanner.events_received()


def test_single_press_is_reported_after_the_debounce_time():
    scanner = KeypadScanner(debounce_s=0.02)
    assert run(scanner, {"5"}, 0.0, 0.015) == []
    events = run(scanner, {"5"}, 0.020, 0.020)
    assert events == [KeyPressed("5", 0.020)]
    assert scanner.pressed() == {"5"}


def test_release_is_reported_after_the_debounce_time():
    scanner = KeypadScanner(debounce_s=0.02)
    run(scanner, {"5"}, 0.0, 0.1)
    assert run(scanner, set(), 0.105, 0.12) == []
    assert run(scanner, set(), 0.125, 0.13) == [KeyReleased("5", 0.125, held=False)]


def test_contact_bounce_gives_one_press():
    scanner = KeypadScanner(debounce_s=0.02)
    events = []
    # Bounce: closed/open alternating every 5 ms for 15 ms, then closed.
    for i, closed in enumerate([True, False, True, False, True]):
        events += run(scanner, {"2"} if closed else set(), i * 0.005, i * 0.005)
    events += run(scanner, {"2"}, 0.025, 0.1)
    assert events == [KeyPressed("2", 0.040)]


def test_a_glitch_shorter_than_the_debounce_time_is_ignored():
    scanner = KeypadScanner(debounce_s=0.02)
    events = run(scanner, {"1"}, 0.0, 0.01) + run(scanner, set(), 0.015, 0.2)
    assert events == []


def test_two_keys_on_one_row_are_both_reported():
    scanner = KeypadScanner(debounce_s=0.01)
    events = run(scanner, {"1", "2"}, 0.0, 0.05)
    assert {e.key for e in events if isinstance(e, KeyPressed)} == {"1", "2"}


def test_ghost_corner_and_its_rectangle_are_not_reported():
    scanner = KeypadScanner(debounce_s=0.01)
    # 1, 2 and 4 pressed: electrically 5 closes too (no diodes).
    events = run(scanner, {"1", "2", "4", "5"}, 0.0, 0.1)
    assert events == []
    assert scanner.pressed() == set()


def test_keys_already_down_stay_down_while_a_rectangle_is_ambiguous():
    scanner = KeypadScanner(debounce_s=0.01)
    assert run(scanner, {"1", "2"}, 0.0, 0.05) == [
        KeyPressed("1", 0.01),
        KeyPressed("2", 0.01),
    ]
    # Now 4 goes down too, which brings the phantom 5: nothing changes.
    assert run(scanner, {"1", "2", "4", "5"}, 0.055, 0.2) == []
    assert scanner.pressed() == {"1", "2"}
    # 2 released: no rectangle any more, so 4 is a plain press now.
    events = run(scanner, {"1", "4"}, 0.205, 0.3)
    assert KeyPressed("4", 0.205) in events
    assert KeyReleased("2", 0.215, held=False) in events
    assert all(e.key != "5" for e in events)


def test_hold_is_reported_once_and_marks_the_release():
    scanner = KeypadScanner(debounce_s=0.02, hold_s=1.0)
    events = run(scanner, {"#"}, 0.0, 2.5, step=0.01)
    assert events == [KeyPressed("#", 0.02), KeyHeld("#", 1.02)]
    assert run(scanner, set(), 2.51, 2.6, step=0.01) == [KeyReleased("#", 2.53, True)]


def test_hold_only_for_configured_keys():
    scanner = KeypadScanner(debounce_s=0.02, hold_s=0.5, hold_keys={"#"})
    events = run(scanner, {"5"}, 0.0, 1.0, step=0.01)
    assert events == [KeyPressed("5", 0.02)]
    assert scanner.next_deadline() is None


def test_next_deadline_tracks_debounce_then_hold():
    scanner = KeypadScanner(debounce_s=0.02, hold_s=1.0)
    assert scanner.next_deadline() is None
    sweep(scanner, {"3"}, 0.0)
    assert scanner.next_deadline() == pytest.approx(0.02)
    scanner.tick(0.02)
    assert scanner.events_received() == [KeyPressed("3", 0.02)]
    assert scanner.next_deadline() == pytest.approx(1.02)
    scanner.tick(1.02)
    assert scanner.events_received() == [KeyHeld("3", 1.02)]
    assert scanner.next_deadline() is None


def test_frozen_keys_have_no_deadline():
    scanner = KeypadScanner(debounce_s=0.01, hold_s=0.1)
    run(scanner, {"1", "2"}, 0.0, 0.02)
    run(scanner, {"1", "2", "4", "5"}, 0.025, 0.03)
    # 1 and 2 are pressed (hold pending) but frozen: no busy deadline.
    assert scanner.next_deadline() is None


def test_scan_result_rejects_out_of_range_rows_and_columns():
    scanner = KeypadScanner()
    with pytest.raises(ValueError, match="row"):
        scanner.scan_result(4, set(), 0.0)
    with pytest.raises(ValueError, match="column"):
        scanner.scan_result(0, {3}, 0.0)


@pytest.mark.parametrize(
    ("layout", "message"),
    [((), "at least"), (("12", "3"), "same number"), (("12", "21"), "repeats")],
)
def test_layout_is_validated(layout, message):
    with pytest.raises(ValueError, match=message):
        KeypadScanner(layout)


def test_debouncer_named_inputs():
    deb = Debouncer(
        ("ready", "hangup"), debounce_s=0.02, hold_s=0.5, hold_keys={"hangup"}
    )
    assert deb.names == ("ready", "hangup")
    deb.update("hangup", True, 0.0)
    deb.update("ready", True, 0.0)
    deb.tick(0.02)
    assert deb.events_received() == [
        KeyPressed("ready", 0.02),
        KeyPressed("hangup", 0.02),
    ]
    assert deb.is_pressed("hangup")
    deb.tick(0.52)
    assert deb.events_received() == [KeyHeld("hangup", 0.52)]
    deb.update("ready", False, 0.6)
    deb.update("ready", False, 0.61)
    assert deb.events_received() == []
    deb.tick(0.62)
    assert deb.events_received() == [KeyReleased("ready", 0.62)]
    assert deb.events_received() == []


def test_debouncer_rejects_bad_timing():
    with pytest.raises(ValueError, match="debounce"):
        Debouncer(("a",), debounce_s=-1)
    with pytest.raises(ValueError, match="hold"):
        Debouncer(("a",), hold_s=0)


def test_press_needs_5_ms_and_release_20_ms_when_asymmetric():
    scanner = KeypadScanner(debounce_s=0.02, press_debounce_s=0.005)
    scanner.scan_result(0, {0}, now=0.000)
    scanner.scan_result(0, {0}, now=0.004)
    assert scanner.events_received() == []
    scanner.scan_result(0, {0}, now=0.005)
    assert scanner.events_received() == [KeyPressed("1", 0.005)]
    scanner.scan_result(0, set(), now=0.100)
    scanner.scan_result(0, {0}, now=0.105)  # release bounce: not a new press
    scanner.scan_result(0, set(), now=0.110)
    scanner.scan_result(0, set(), now=0.125)
    assert scanner.events_received() == []
    scanner.scan_result(0, set(), now=0.130)
    assert scanner.events_received() == [KeyReleased("1", 0.130, False)]
