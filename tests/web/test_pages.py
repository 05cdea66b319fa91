"""The web page's HTML: escaping, and the live provisioning/update rows."""

from __future__ import annotations

from appliance.calllog.core import Direction, Entry
from appliance.ui.panel import Panel
from appliance.web.pages import calls_page, last_call_rows, live_rows, status_page


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


def test_the_last_calls_codec_mos_jitter_and_loss_are_status_rows() -> None:
    entry = Entry(
        1796291100.0,
        Direction.INCOMING,
        "client:carol",
        65.0,
        mos=4.31,
        codec="opus",
        jitter_ms=4.26,
        loss_percent=0.5,
    )
    rows = dict(last_call_rows(entry))
    assert (rows["Codec"], rows["MOS"], rows["Jitter"], rows["Packet loss"]) == (
        "opus",
        "4.3",
        "4.3 ms",
        "0.50 %",
    )
    missed = dict(last_call_rows(Entry(0.0, Direction.MISSED, "client:dave")))
    assert (missed["Codec"], missed["Jitter"], missed["Packet loss"]) == ("-",) * 3
    assert last_call_rows(None) == [("Call", "none yet")]
