"""The self-test sequence (appliance/selftest/plan.py), driven with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.errors import InvalidStateError
from appliance.selftest.plan import (
    AskInput,
    BlinkLed,
    CheckFinished,
    DrawTestScreen,
    Outcome,
    PlayTone,
    RecordInput,
    SelfTest,
    Step,
    StepFinished,
    StepStarted,
    build_plan,
    choose_audio_devices,
    plan_check,
    prompt_for,
)


def started(test: SelfTest) -> list[object]:
    return [e.step for e in test.events_received() if isinstance(e, StepStarted)]


def test_performed_steps_then_asks_in_order_with_timeouts_and_strays() -> None:
    steps = build_plan(
        outputs=["alsa:spk"],
        inputs=["alsa:mic"],
        screen=True,
        leds=["ringer"],
        keys=["1", "2"],
        buttons=["accept", "hook"],
        hook=True,
    )
    assert steps == [
        DrawTestScreen(),
        BlinkLed("ringer"),
        PlayTone("alsa:spk"),
        RecordInput("alsa:mic"),
        AskInput("key", "1"),
        AskInput("key", "2"),
        AskInput("button", "accept"),
        AskInput("hook", "hook"),
    ]
    test = SelfTest(steps, key_timeout_s=10.0)
    assert test.next_deadline() is None
    test.start(0.0)
    assert started(test) == [DrawTestScreen()]
    test.step_done(2.0)
    test.step_done(4.0, error="no such LED")
    test.step_done(5.0)
    assert started(test) == [
        BlinkLed("ringer"),
        PlayTone("alsa:spk"),
        RecordInput("alsa:mic"),
    ]
    test.input_event("key", "1", 5.5)  # not asked yet: ignored
    test.level_measured(-23.04, 6.0)
    assert test.expecting() == AskInput("key", "1")
    assert test.next_deadline() == 16.0
    test.input_event("key", "1", 7.5)
    assert test.expecting() == AskInput("key", "2")
    test.input_event("key", "3", 8.0)  # the wrong key: noted
    test.input_event("button", "2", 8.5)  # a button is not the key "2"
    test.tick(17.4)  # each ask waits from its own start (7.5 s)
    assert test.expecting() == AskInput("key", "2")
    test.tick(17.5)
    assert test.expecting() == AskInput("button", "accept")
    test.skip(19.0)
    test.input_event("hook", "hook", 20.0)
    assert test.finished and test.current is None and test.next_deadline() is None
    events = test.events_received()
    assert isinstance(events[-1], CheckFinished)
    verdicts = [(r.part, r.outcome, r.detail) for r in events[-1].results]
    assert verdicts == [
        ("screen", Outcome.PASS, "drawn"),
        ("LED ringer", Outcome.FAIL, "no such LED"),
        ("output alsa:spk", Outcome.PASS, "played 1000 Hz at -15 dBFS for 1 s"),
        ("input alsa:mic", Outcome.PASS, "-23.0 dBFS"),
        ("key 1", Outcome.PASS, "pressed after 1.5 s"),
        ("key 2", Outcome.FAIL, "no press within 10 s (got 3 2)"),
        ("button accept", Outcome.SKIPPED, "skipped"),
        ("hook switch", Outcome.PASS, "pressed after 1.0 s"),
    ]
    assert events[-1].results[3].level_dbfs == pytest.approx(-23.04)
    assert not events[-1].passed


def test_silence_fails_an_input_and_skip_rest_skips_every_later_ask() -> None:
    steps: list[Step] = [
        RecordInput("alsa:mic"),
        AskInput("key", "1"),
        AskInput("key", "2"),
        AskInput("button", "ready"),
    ]
    test = SelfTest(steps, key_timeout_s=5.0)
    test.start(0.0)
    with pytest.raises(InvalidStateError):
        test.start(0.0)
    # Inputs, skips and timeouts do not end a performed step.
    test.input_event("key", "1", 0.1)
    test.skip(0.1)
    test.tick(100.0)
    assert test.current == RecordInput("alsa:mic")
    test.level_measured(-120.0, 1.0)
    with pytest.raises(InvalidStateError):
        test.step_done(1.1)  # an ask ends by input, skip or timeout
    with pytest.raises(InvalidStateError):
        test.level_measured(-20.0, 1.1)
    test.skip(1.2, rest=True)
    assert test.finished
    results = test.results
    assert results[0].outcome is Outcome.FAIL and "silence" in results[0].detail
    assert [r.outcome for r in results[1:]] == [Outcome.SKIPPED] * 3
    finished = [e for e in test.events_received() if isinstance(e, CheckFinished)]
    assert len(finished) == 1 and not finished[0].passed


def test_skipped_parts_do_not_fail_and_an_empty_plan_finishes_at_once() -> None:
    test = SelfTest([AskInput("key", "5")])
    test.start(0.0)
    test.skip(1.0)
    events = test.events_received()
    assert isinstance(events[-2], StepFinished)
    assert isinstance(events[-1], CheckFinished) and events[-1].passed
    empty = SelfTest([])
    empty.start(0.0)
    assert empty.finished and empty.events_received() == [CheckFinished(())]
    with pytest.raises(ValueError):
        SelfTest([], key_timeout_s=0)


def test_one_device_per_card_as_the_firmware_opens_it() -> None:
    listed = [
        ("alsa:default", "output"),
        ("alsa:sysdefault:CARD=Headset", "output"),
        ("alsa:front:CARD=Headset,DEV=0", "output"),
        ("alsa:hw:CARD=Headset,DEV=0", "output"),
        ("alsa:plughw:CARD=Headset,DEV=0", "output"),
        ("alsa:hw:CARD=vc4hdmi0,DEV=0", "output"),
        ("alsa:hdmi:CARD=vc4hdmi0,DEV=0", "output"),
        ("alsa:pulse", "output"),
        ("alsa:A_spk", "output"),
        ("alsa:sysdefault:CARD=Headset", "input"),
        ("alsa:pulse", "input"),
        ("alsa:A_mic", "input"),
    ]
    outputs, inputs = choose_audio_devices(listed)
    assert outputs == [
        "alsa:plughw:CARD=Headset,DEV=0",
        "alsa:hw:CARD=vc4hdmi0,DEV=0",
        "alsa:A_spk",
    ]
    assert inputs == ["alsa:sysdefault:CARD=Headset", "alsa:A_mic"]


def test_plan_check_notes_what_cannot_be_tested() -> None:
    common: dict[str, Any] = {
        "listed": [("alsa:A_spk", "output")],
        "outputs": None,
        "inputs": None,
        "listing_problem": "",
        "display_problem": "",
        "keys": "12",
        "buttons": ["ready", "hook"],
    }
    steps, notes = plan_check(panel_enabled=False, panel_problem="", **common)
    assert steps == [PlayTone("alsa:A_spk")]
    assert [(n.part, n.outcome) for n in notes] == [
        ("sound inputs", Outcome.FAIL),
        ("front panel", Outcome.SKIPPED),
    ]
    steps, notes = plan_check(panel_enabled=True, panel_problem="no gpiochip", **common)
    assert [n.part for n in notes if n.outcome is Outcome.FAIL] == [
        "sound inputs",
        "front panel",
    ]
    common["display_problem"] = "no OLED at 0x3C"
    common["inputs"] = ["alsa:given"]
    steps, notes = plan_check(panel_enabled=True, panel_problem="", **common)
    assert [(n.part, n.detail) for n in notes] == [("screen", "no OLED at 0x3C")]
    assert DrawTestScreen() not in steps
    assert steps[-4:] == [
        AskInput("key", "1"),
        AskInput("key", "2"),
        AskInput("button", "ready"),
        AskInput("hook", "hook"),
    ]
    assert RecordInput("alsa:given") in steps


def test_prompts_name_what_to_do() -> None:
    assert prompt_for(AskInput("button", "vol_up"), 7).big == "Vol+"
    assert prompt_for(AskInput("key", "#"), 7).hint == "within 7 s"
    assert "A_spk" in prompt_for(PlayTone("alsa:A_spk")).hint
