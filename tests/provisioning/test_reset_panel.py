"""Reset provisioning on the panel (pure): asked by holding Hangup or by
``appliance provision reset``; only a 3 s hold of Hangup confirms it."""

from __future__ import annotations

from appliance.ui.commands import ResetCancelled, ResetProvisioning
from appliance.ui.panel import Panel
from appliance.ui.reset_confirm import RESET_CONFIRM_S, RESET_HOLD_S
from appliance.ui.screens import render
from appliance.ui.view import PanelState, Screen


def ready_panel() -> Panel:
    panel = Panel()
    panel.reset_enabled = True
    panel.registered("alice", 0.0)
    return panel


def test_only_a_long_press_confirms():
    panel = ready_panel()
    panel.button("hangup_held", 1.0)  # the panel-alone gesture
    assert panel.state is PanelState.CONFIRM_RESET
    assert panel.view().screen is Screen.CONFIRM_RESET
    panel.button("hangup_released", 1.2)
    # A hold shorter than RESET_HOLD_S does nothing.
    panel.button("hangup", 2.0)
    assert panel.next_deadline() == 2.0 + RESET_HOLD_S
    panel.tick(2.0 + RESET_HOLD_S - 0.1)
    panel.button("hangup_released", 2.0 + RESET_HOLD_S - 0.1)
    panel.tick(2.0 + RESET_HOLD_S + 0.1)
    assert panel.state is PanelState.CONFIRM_RESET and not panel.commands_to_send()
    # The long press.
    panel.button("hangup", 10.0)
    panel.button("hangup_held", 11.0)  # the 1 s hold event on the way changes nothing
    render(panel.view())  # the countdown draws
    panel.tick(10.0 + RESET_HOLD_S)
    assert panel.commands_to_send() == [ResetProvisioning()]
    assert panel.state is PanelState.IDLE


def test_anything_else_cancels():
    for leave in ("ready", "accept", "hook_up", "key", "incoming", "timeout"):
        panel = ready_panel()
        assert panel.reset_requested(1.0)
        assert panel.state is PanelState.CONFIRM_RESET
        if leave == "key":
            panel.key("5", 2.0)
        elif leave == "incoming":
            panel.incoming("client:bob", {}, 2.0)
        elif leave == "timeout":
            panel.tick(1.0 + RESET_CONFIRM_S)
        else:
            panel.button(leave, 2.0)
        commands = panel.commands_to_send()
        assert commands[0] == ResetCancelled(), leave
        assert panel.state is not PanelState.CONFIRM_RESET, leave
        assert ResetProvisioning() not in commands


def test_not_offered_during_a_call_or_without_provisioning():
    panel = ready_panel()
    panel.incoming("client:bob", {}, 1.0)
    panel.button("accept", 1.5)
    panel.accepted(1.6)
    assert not panel.reset_requested(2.0)
    panel.button("hangup_held", 2.5)
    assert panel.state is PanelState.IN_CALL
    manual = Panel()  # a phone with a token file: nothing to reset
    manual.registered("alice", 0.0)
    assert not manual.reset_requested(1.0)
    manual.button("hangup_held", 1.0)
    assert manual.state is PanelState.IDLE


def test_from_the_provisioning_screen_and_back():
    panel = Panel()
    panel.reset_enabled = True
    panel.provisioning("", "", "Phone revoked by the administrator", 0.0)
    panel.button("hangup_held", 1.0)
    assert panel.state is PanelState.CONFIRM_RESET
    panel.provisioning("", "", "Provisioner unreachable", 1.5)  # stays asked
    assert panel.state is PanelState.CONFIRM_RESET
    panel.button("ready", 2.0)
    assert panel.commands_to_send() == [ResetCancelled()]
    assert panel.state is PanelState.PROVISIONING
