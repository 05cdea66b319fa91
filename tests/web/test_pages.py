"""The web page's HTML: escaping, and the live provisioning/update rows."""

from __future__ import annotations

from appliance.ui.panel import Panel
from appliance.web.pages import calls_page, live_rows, status_page


def test_values_from_outside_are_escaped() -> None:
    html = calls_page("tok", [("now", "missed", "<script>x</script>", "0:00", "-")])
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    html = status_page('"><b>', [("Phone", [("Identity", "<i>me</i>")])])
    assert "<i>me</i>" not in html and '"><b>' not in html


def test_the_panels_provisioning_and_update_steps_are_status_rows() -> None:
    panel = Panel()
    assert live_rows(panel.view()) == []
    panel.provisioning("WDJB-MJHT", "https://prov.example/a", "waiting", 1.0)
    assert live_rows(panel.view()) == [("Provisioning now", "code WDJB-MJHT - waiting")]
    panel.provisioned(2.0)
    panel.update_shown("downloading", "1.4.0", 0.25, "", now=3.0)
    assert live_rows(panel.view()) == [("Update now", "downloading 1.4.0 25%")]
