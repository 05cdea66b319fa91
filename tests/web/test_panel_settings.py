"""The page's volume, country and directory forms on a real phone: the HTTPS
server, a plain HTTP client, the front panel's controller on mock pins, a
Device on the in-process exchange, and the state file the panel keeps.

What the browser test (tests/web/test_browser.py) does once, these check in
full: the choice applies at once (the next dial tone is the new country's),
it survives a restart through ``ui.state_file``, bad input is refused with a
reason, and a form without its token is refused.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from appliance.config import AppConfig
from appliance.exchange.server import ExchangeServer
from appliance.media.frames import SAMPLE_RATE
from appliance.ui.desk import open_call_log
from appliance.ui.settings import PanelSettings, UiConfig
from appliance.ui.view import PanelState
from appliance.web.server import WebPage
from appliance.web.settings import WebConfig
from tests.conftest import wait_until
from tests.media.helpers import read_wav
from tests.ui.test_controller import PanelPhone, panel_phone
from tests.ui.test_progress_tones import peaks, seconds_recorded

pytestmark = pytest.mark.slow

PASSWORD = "a-long-enough-one"
CONFIGURED = {"7": "reception"}


@contextlib.asynccontextmanager
async def phone_with_page(
    exchange: ExchangeServer, tmp_path: Path, **device_options: Any
) -> AsyncIterator[tuple[PanelPhone, WebPage, PanelSettings]]:
    """bob's panel (US tones, CONFIGURED directory) and its page, with the
    saved choices of ``tmp_path/panel.json`` restored as at a service start."""
    state = tmp_path / "panel.json"
    ui = UiConfig(state_file=str(state), directory=CONFIGURED, country="US")
    web = WebConfig(address="127.0.0.1", port=0, state_dir=str(tmp_path / "web"))
    config = replace(AppConfig(), web=web, ui=ui)
    settings = PanelSettings(state)
    async with panel_phone(
        exchange, "bob", ui.make_panel(), settings=settings, **device_options
    ) as bob:
        calls = await open_call_log(ui, bob.device, bob.controller, bob.stack)
        page = WebPage(
            config, bob.device, bob.controller, calls, tmp_path / "web", lambda: None
        )
        async with page:
            yield bob, page, settings


def _csrf(html: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _notice(html: str) -> str:
    found = re.search(r"<p id=notice>([^<]*)</p>", html)
    return unescape(found.group(1)) if found else ""


async def _log_in(http: aiohttp.ClientSession, page: WebPage) -> str:
    """Set the password (first visit); return the session's form token."""
    async with http.get(page.url + "setup", ssl=False) as answer:
        html = await answer.text()
    form = {"password": PASSWORD, "repeat": PASSWORD, "csrf": _csrf(html)}
    async with http.post(page.url + "setup", data=form, ssl=False) as answer:
        assert answer.url.path == "/status"
        return _csrf(await answer.text())


async def _post(
    http: aiohttp.ClientSession, page: WebPage, path: str, form: dict[str, str]
) -> tuple[int, str, str]:
    async with http.post(page.url + path, data=form, ssl=False) as answer:
        return answer.status, answer.url.path, await answer.text()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # an address, not a host name
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def dial_tone(phone: PanelPhone, wav: Path) -> np.ndarray:
    """Lift the handset, record a second of dial tone, hang up (once per
    phone: the file sink records one tone)."""
    phone.hw.press_button("hook")
    await phone.wait_state(PanelState.DIALING)
    await wait_until(lambda: phone.controller.progress_tone == "dialtone")
    start = seconds_recorded(wav)
    await wait_until(lambda: seconds_recorded(wav) >= start + 1.2)
    phone.hw.release_button("hook")
    await phone.wait_state(PanelState.IDLE)
    samples, _rate, _channels = read_wav(wav)
    # Past the first 0.1 s, where the tone may still be starting.
    first = int((start + 0.1) * SAMPLE_RATE)
    return np.asarray(samples[first : first + SAMPLE_RATE])


async def test_the_country_applies_at_once_and_survives_a_restart(
    exchange: ExchangeServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    wav = tmp_path / "out.wav"
    async with phone_with_page(exchange, tmp_path, output_device=f"file:{wav}") as (
        bob,
        page,
        settings,
    ):
        csrf = await _log_in(http, page)
        # From the configuration: shown, not saved, and already what plays.
        async with http.get(page.url + "settings", ssl=False) as answer:
            html = await answer.text()
        assert "<b id=country>US</b>" in html
        assert "From the configuration (<code>ui.country</code>)" in html
        assert bob.device.audio.country == "US"  # would play 350+440 Hz

        # A form without its token, and countries we have no tones for.
        status, _, _ = await _post(http, page, "settings/country", {"country": "JP"})
        assert status == 403
        for bad in ("XX", "", "J P", "<b>"):
            form = {"country": bad, "csrf": csrf}
            status, _, html = await _post(http, page, "settings/country", form)
            assert status == 400, bad
            assert _notice(html).startswith("Not saved: unknown country"), html
            assert "known: AU, CA, DE, EU, FR, GB, JP, UK, US" in _notice(html)
        assert bob.panel.country == "US" and bob.panel.chosen_country is None

        # Japan: 400 Hz on the next dial tone, and kept in the state file.
        form = {"country": "jp", "csrf": csrf}
        status, where, html = await _post(http, page, "settings/country", form)
        assert (status, where, _notice(html)) == (200, "/settings", "Applied.")
        assert "<b id=country>JP</b>" in html and "Chosen here" in html
        assert bob.device.audio.country == "JP"
        assert peaks(await dial_tone(bob, wav), 1) == pytest.approx([400], abs=2)
        await wait_until(lambda: settings.load_country() == "JP", 5.0)
        assert settings.load_directory() is None  # still the configuration's
    # A restart: the choice is read back from the state file.
    async with phone_with_page(exchange, tmp_path) as (again, _page, _settings):
        assert again.panel.country == "JP"
        assert again.panel.chosen_country == "JP"
        assert again.device.audio.country == "JP"


async def test_the_configured_directory_comes_back_after_a_confirmation(
    exchange: ExchangeServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with phone_with_page(exchange, tmp_path) as (bob, page, settings):
        csrf = await _log_in(http, page)
        # Nothing edited: nothing to revert; the page offers no link.
        async with http.get(page.url + "settings/directory/revert", ssl=False) as a:
            assert a.url.path == "/settings"
            assert "revert-directory" not in await a.text()
        form = {"code": "42", "name": "erin", "csrf": csrf}
        status, _, html = await _post(http, page, "settings/directory", form)
        assert status == 200 and "id=revert-directory" in html
        await wait_until(
            lambda: settings.load_directory() == {"7": "reception", "42": "erin"}, 5.0
        )

        # The confirmation shows what comes back; only its form reverts.
        async with http.get(page.url + "settings/directory/revert", ssl=False) as a:
            html = await a.text()
        assert a.status == 200 and "id=confirm-revert" in html
        assert "<th>7</th><td>reception</td>" in html and "erin" not in html
        status, _, _ = await _post(
            http, page, "settings/directory/revert", {"confirm": "1"}
        )
        assert status == 403  # no token
        status, _, html = await _post(
            http, page, "settings/directory/revert", {"csrf": csrf}
        )
        assert (status, _notice(html)) == (400, "Not reverted: not confirmed.")
        assert bob.panel.directory == {"7": "reception", "42": "erin"}

        form = {"confirm": "1", "csrf": csrf}
        status, _, html = await _post(http, page, "settings/directory/revert", form)
        assert (status, _notice(html)) == (200, "The configured directory is back.")
        assert "From the configuration" in html and "erin" not in html
        assert bob.panel.directory == CONFIGURED
        assert bob.panel.edited_directory is None
        # Dropped from the state file; the volumes and the rest are kept.
        await wait_until(lambda: settings.load_directory() is None, 5.0)
        assert settings.load_volume() == bob.panel.volume_levels()
        await bob.hw.tap_key("4")
        await bob.hw.tap_key("2")
        await wait_until(lambda: bob.panel.view().dial_string == "42", 5.0)
        assert bob.panel.view().dial_match == ""
    async with phone_with_page(exchange, tmp_path) as (again, _page, _settings):
        assert again.panel.directory == CONFIGURED
        assert again.panel.edited_directory is None


async def test_a_volume_out_of_range_or_not_a_number_is_refused(
    exchange: ExchangeServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with phone_with_page(exchange, tmp_path) as (bob, page, settings):
        csrf = await _log_in(http, page)
        before = bob.panel.volume_levels()
        assert before == {"speaker": 6, "ringtone": 6}
        refused = [
            ({"ringtone": "9"}, "ringer volume (ringtone)", "0 to 8, not '9'"),
            ({"ringtone": "-1"}, "ringer volume (ringtone)", "0 to 8, not '-1'"),
            ({"speaker": "0"}, "call volume (speaker)", "1 to 8, not '0'"),
            ({"speaker": "loud"}, "call volume (speaker)", "1 to 8, not 'loud'"),
            ({"speaker": "3.5"}, "call volume (speaker)", "1 to 8, not '3.5'"),
            ({"speaker": ""}, "call volume (speaker)", "1 to 8, not ''"),
            # One good level beside a bad one: neither is set.
            ({"speaker": "3", "ringtone": "99"}, "ringer volume (ringtone)", "0 to 8"),
            ({}, "no volume given", "(speaker or ringtone)"),
        ]
        for fields, field, allowed in refused:
            form = {**fields, "csrf": csrf}
            status, where, html = await _post(http, page, "settings/volume", form)
            notice = _notice(html)
            assert (status, where) == (400, "/settings/volume"), fields
            assert notice.startswith(f"Not saved: {field}"), notice
            assert allowed in notice, notice
            assert "Applied" not in html
            assert bob.panel.volume_levels() == before, fields
        assert settings.load_volume() == {}  # nothing was written

        # The edges of each range are levels like any other.
        form = {"speaker": "1", "ringtone": "0", "csrf": csrf}
        status, where, html = await _post(http, page, "settings/volume", form)
        assert (status, where, _notice(html)) == (200, "/settings", "Applied.")
        assert bob.panel.volume_levels() == {"speaker": 1, "ringtone": 0}
        await wait_until(
            lambda: settings.load_volume() == {"speaker": 1, "ringtone": 0}, 5.0
        )
