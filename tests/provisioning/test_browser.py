"""The approval page in a real headless browser (Debian's chromium over CDP):
log in, approve a code, deny a code, see the phone listed; the session
cookie's flags as the browser stored them."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from appliance.provisioning.server import DEVICE_GRANT_TYPE
from tests.provisioning.cdp import Page, chromium
from tests.provisioning.conftest import ADMIN_PASSWORD, ProvisionerProcess

pytestmark = pytest.mark.slow


async def device_code(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """What a phone does first: ask for a device code."""
    async with http.post(f"{url}/api/device/authorize") as response:
        assert response.status == 200
        return dict(await response.json())


async def poll(http: aiohttp.ClientSession, url: str, code: str) -> dict[str, Any]:
    async with http.post(
        f"{url}/api/device/token",
        data={"grant_type": DEVICE_GRANT_TYPE, "device_code": code},
    ) as response:
        return dict(await response.json())


async def enter_code(page: Page, url: str, user_code: str) -> None:
    await page.goto(f"{url}/device")
    await page.fill("#user_code", user_code.lower().replace("-", ""))
    await page.click_and_load("#continue", "!!document.querySelector('#approve')")
    assert await page.text("#code") == user_code


async def test_log_in_approve_deny_and_see_the_phone(provisioner: ProvisionerProcess):
    url = provisioner.url
    async with aiohttp.ClientSession() as http, chromium() as page:
        await page.send("Page.enable")
        first = await device_code(http, url)

        # The QR code's link: not logged in yet, so the login page comes first.
        await page.goto(first["verification_uri_complete"])
        await page.wait_for("location.pathname === '/login'")
        await page.fill("#password", "not the password")
        await page.click_and_load("#login", "!!document.querySelector('#error')")
        assert "wrong password" in await page.text("#error")
        await page.fill("#password", ADMIN_PASSWORD)
        await page.click_and_load("#login", "location.pathname === '/device'")
        # Back where the link pointed, with the code filled in.
        assert (
            await page.evaluate("document.querySelector('#user_code').value")
            == (first["user_code"])
        )
        await page.click_and_load("#continue", "!!document.querySelector('#approve')")
        assert await page.text("#code") == first["user_code"]
        await page.fill("#identity", "alice")
        await page.fill("#name", "Front desk")
        await page.click_and_load("#approve", "!!document.querySelector('#result')")
        assert "alice" in await page.text("#result")
        approved = await poll(http, url, first["device_code"])
        assert approved["identity"] == "alice" and approved["name"] == "Front desk"

        second = await device_code(http, url)
        await enter_code(page, url, second["user_code"])
        await page.click_and_load("#deny", "!!document.querySelector('#result')")
        assert "denied" in await page.text("#result")
        assert (await poll(http, url, second["device_code"]))["error"] == (
            "access_denied"
        )

        await page.goto(f"{url}/admin")
        rows = await page.wait_for(
            "JSON.stringify([...document.querySelectorAll('tr.phone')]"
            ".map(r => r.innerText))"
        )
        phones = json.loads(rows)
        assert len(phones) == 1
        assert "alice" in phones[0] and "active" in phones[0]

        cookies = (await page.send("Network.getCookies", urls=[url]))["cookies"]
        session = next(c for c in cookies if c["name"] == "session")
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"


async def test_a_forged_form_is_refused(provisioner: ProvisionerProcess):
    # A form posted without the session's CSRF token changes nothing.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        await provisioner.admin(http)
        code = await device_code(http, provisioner.url)
        async with http.post(
            f"{provisioner.url}/device/decide",
            data={
                "user_code": code["user_code"],
                "identity": "mallory",
                "action": "approve",
                "csrf": "forged",
            },
        ) as response:
            assert response.status == 403
        assert (await poll(http, provisioner.url, code["device_code"]))["error"] == (
            "authorization_pending"
        )
