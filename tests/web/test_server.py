"""The web page's adapter on a real HTTPS socket, with a plain HTTP client.

No browser and no front panel here: what the server refuses, redirects and
keeps, quicker than the chromium test (tests/web/test_browser.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from appliance.calllog.recorder import CallLogRecorder
from appliance.config import AppConfig
from appliance.web.guard import FREE_FAILURES
from appliance.web.server import WebPage, start_web
from appliance.web.settings import WebConfig
from tests.conftest import local_device

PASSWORD = "a-long-enough-one"


def _config(tmp_path: Path) -> AppConfig:
    web = WebConfig(address="127.0.0.1", port=0, state_dir=str(tmp_path / "web"))
    return replace(AppConfig(), web=web)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, restarts: list[int]) -> AsyncIterator[WebPage]:
    device = local_device("ws://127.0.0.1:9/")
    recorder = CallLogRecorder(device, None, clock_known=lambda: True)
    page = WebPage(
        _config(tmp_path),
        device,
        None,
        recorder,
        tmp_path / "web",
        lambda: restarts.append(1),
    )
    async with recorder, page:
        yield page


def _csrf(html: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # an address, not a host name
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(url, ssl=False) as answer:
        return answer.status, str(answer.url.path), await answer.text()


async def test_no_page_but_the_password_form_until_one_is_set(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with serve(tmp_path, []) as page:
        for path in ("", "status", "settings", "calls", "logs", "login"):
            status, where, _ = await _get(http, page.url + path)
            assert (status, where) == (200, "/setup")
        _, _, html = await _get(http, page.url + "setup")
        form = {"password": "short", "repeat": "short", "csrf": _csrf(html)}
        async with http.post(page.url + "setup", data=form, ssl=False) as answer:
            assert answer.status == 400
            assert "at least 8" in await answer.text()
        form = {"password": PASSWORD, "repeat": PASSWORD, "csrf": _csrf(html)}
        async with http.post(page.url + "setup", data=form, ssl=False) as answer:
            assert answer.url.path == "/status"
            assert "Restart" in await answer.text()
        mode = stat.S_IMODE(page.password_file.stat().st_mode)
        assert mode == 0o600
        saved = page.password_file.read_text()

        # Another visitor cannot set it again.
        http.cookie_jar.clear()
        status, where, html = await _get(http, page.url + "setup")
        assert (status, where) == (200, "/login")
        form = {"password": "x" * 12, "repeat": "x" * 12, "csrf": _csrf(html)}
        async with http.post(page.url + "setup", data=form, ssl=False) as answer:
            assert answer.url.path == "/login"
        assert page.password_file.read_text() == saved


async def test_logout_ends_the_session_and_headers_lock_the_page_down(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    restarts: list[int] = []
    async with serve(tmp_path, restarts) as page:
        _, _, html = await _get(http, page.url + "setup")
        form = {"password": PASSWORD, "repeat": PASSWORD, "csrf": _csrf(html)}
        async with http.post(page.url + "setup", data=form, ssl=False) as answer:
            assert "script-src" not in answer.headers["Content-Security-Policy"]
            assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert answer.headers["Cache-Control"] == "no-store"
            html = await answer.text()
        status, where, settings = await _get(http, page.url + "settings")
        assert (status, where) == (200, "/settings")
        assert "front panel is off" in settings
        form = {"ringtone": "3", "csrf": _csrf(html)}
        async with http.post(
            page.url + "settings/volume", data=form, ssl=False
        ) as answer:
            assert answer.status == 409  # nothing to set it on
        cookie = http.cookie_jar.filter_cookies(URL(page.url))["__Host-phone"].value
        async with http.post(
            page.url + "logout", data={"csrf": _csrf(html)}, ssl=False
        ) as answer:
            assert answer.url.path == "/login"
        async with (
            aiohttp.ClientSession() as stale,
            stale.get(
                page.url + "status",
                headers={"Cookie": f"__Host-phone={cookie}"},
                ssl=False,
                allow_redirects=False,
            ) as answer,
        ):
            assert answer.status == 303
            assert answer.headers["Location"] == "/login"
        assert restarts == []


async def test_the_certificate_is_kept_across_restarts(tmp_path: Path) -> None:
    async with serve(tmp_path, []):
        first = (tmp_path / "web" / "web-cert.pem").read_bytes()
    key = tmp_path / "web" / "web-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    async with serve(tmp_path, []):
        assert (tmp_path / "web" / "web-cert.pem").read_bytes() == first


async def test_start_web_serves_nothing_when_off_or_without_a_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    device = local_device("ws://127.0.0.1:9/")
    recorder = CallLogRecorder(device, None)
    stop, status = asyncio.Event(), list[int]()
    async with contextlib.AsyncExitStack() as stack:
        off = replace(_config(tmp_path), web=WebConfig(enabled=False))
        assert await start_web(off, device, None, recorder, stack, stop, status) is None
        nowhere = replace(_config(tmp_path), web=WebConfig(port=0))
        assert (
            await start_web(nowhere, device, None, recorder, stack, stop, status)
            is None
        )
        page = await start_web(
            _config(tmp_path), device, None, recorder, stack, stop, status
        )
        assert page is not None and page.url.startswith("https://127.0.0.1:")
    assert not (tmp_path / "web" / "web-password").exists()


async def test_a_burst_of_parallel_guesses_is_held_to_the_limit(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(tmp_path, []) as page:
        _, _, html = await _get(http, page.url + "setup")
        form = {"password": PASSWORD, "repeat": PASSWORD, "csrf": _csrf(html)}
        async with http.post(page.url + "setup", data=form, ssl=False):
            pass
        http.cookie_jar.clear()
        _, _, html = await _get(http, page.url + "login")
        guess = {"password": "wrong-guess", "csrf": _csrf(html)}

        async def attempt() -> int:
            async with http.post(page.url + "login", data=guess, ssl=False) as answer:
                return answer.status

        with caplog.at_level(logging.WARNING, "appliance.web"):
            statuses = await asyncio.gather(*(attempt() for _ in range(12)))
        assert sorted(statuses) == [401] * 2 + [429] * 10
        # Only the free failures were checked; every guess after them waited.
        checked = [r for r in caplog.records if "wrong password" in r.getMessage()]
        assert len(checked) == FREE_FAILURES


async def _set_up(http: aiohttp.ClientSession, page: WebPage) -> str:
    """Set the first password; return the logged-in session's CSRF token."""
    _, _, html = await _get(http, page.url + "setup")
    form = {"password": PASSWORD, "repeat": PASSWORD, "csrf": _csrf(html)}
    async with http.post(page.url + "setup", data=form, ssl=False) as answer:
        return _csrf(await answer.text())


async def test_changing_the_password_needs_the_current_one_and_ends_sessions(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with (
        serve(tmp_path, []) as page,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
    ):
        token = await _set_up(http, page)
        # A second visitor logs in with the same password.
        _, _, html = await _get(other, page.url + "login")
        form = {"password": PASSWORD, "csrf": _csrf(html)}
        async with other.post(page.url + "login", data=form, ssl=False) as answer:
            assert answer.url.path == "/status"
        saved = page.password_file.read_text()
        new = "another-long-one"

        async def change(current: str, password: str, repeat: str, csrf: str) -> int:
            form = {"current": current, "password": password, "repeat": repeat}
            async with http.post(
                page.url + "password", data={**form, "csrf": csrf}, ssl=False
            ) as answer:
                return answer.status

        assert await change(PASSWORD, new, new, "forged") == 403
        assert await change("wrong-current", new, new, token) == 401
        assert await change(PASSWORD, new, "mistyped-one", token) == 400
        assert await change(PASSWORD, "short", "short", token) == 400
        assert page.password_file.read_text() == saved
        form = {"current": PASSWORD, "password": new, "repeat": new, "csrf": token}
        async with http.post(page.url + "password", data=form, ssl=False) as answer:
            assert answer.url.path == "/password"
            assert "Every other session was logged out" in await answer.text()
        assert page.password_file.read_text() != saved
        assert stat.S_IMODE(page.password_file.stat().st_mode) == 0o600
        # This browser goes on; the other one was logged out.
        status, where, _ = await _get(http, page.url + "status")
        assert (status, where) == (200, "/status")
        status, where, html = await _get(other, page.url + "status")
        assert (status, where) == (200, "/login")
        for password, expected in ((PASSWORD, 401), (new, 200)):
            form = {"password": password, "csrf": _csrf(html)}
            async with other.post(page.url + "login", data=form, ssl=False) as answer:
                assert answer.status == expected
                html = await answer.text()


async def test_wrong_current_passwords_share_the_login_limit(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with serve(tmp_path, []) as page:
        token = await _set_up(http, page)
        form = {"current": "wrong", "password": "x" * 10, "repeat": "x" * 10}
        statuses = []
        for _ in range(FREE_FAILURES + 1):
            async with http.post(
                page.url + "password", data={**form, "csrf": token}, ssl=False
            ) as answer:
                statuses.append(answer.status)
                retry = answer.headers.get("Retry-After")
        assert statuses == [401] * (FREE_FAILURES - 1) + [429, 429]
        assert retry is not None and int(retry) >= 1
        # The login form from this address waits too, even with the right one.
        http.cookie_jar.clear()
        _, _, html = await _get(http, page.url + "login")
        login = {"password": PASSWORD, "csrf": _csrf(html)}
        async with http.post(page.url + "login", data=login, ssl=False) as answer:
            assert answer.status == 429
