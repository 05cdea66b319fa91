"""The front panel's provisioning state: shown while unprovisioned, never
over a call, left when the phone has its identity."""

from __future__ import annotations

from appliance.ui.panel import Panel
from appliance.ui.view import PanelState, Screen

URI = "http://127.0.0.1:8470/device?user_code=BCDF-GHJK"


def test_provisioning_screen_until_provisioned():
    panel = Panel()
    panel.provisioning("BCDF-GHJK", URI, "", 0.0)
    view = panel.view()
    assert view.screen is Screen.PROVISIONING
    assert (view.provisioning_code, view.provisioning_uri) == ("BCDF-GHJK", URI)
    panel.key("5", 1.0)  # the keypad does nothing here
    assert panel.state is PanelState.PROVISIONING and not panel.commands_to_send()
    panel.provisioned(2.0)
    assert panel.state is PanelState.OFFLINE
    panel.registered("alice", 3.0)
    assert panel.state is PanelState.IDLE


def test_revocation_during_a_call_shows_after_the_call():
    panel = Panel()
    panel.registered("alice", 0.0)
    panel.incoming("client:bob", {}, 1.0)
    panel.button("accept", 2.0)
    panel.accepted(2.1)
    panel.provisioning("", "", "Phone revoked", 3.0)
    assert panel.state is PanelState.IN_CALL
    panel.disconnected(4.0)
    assert panel.state is PanelState.PROVISIONING
    assert panel.view().provisioning_message == "Phone revoked"
