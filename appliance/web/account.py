"""The page's password: set on the first visit, checked at login, changed.

It may also be set before any visit, by ``appliance web-password``
(:mod:`appliance.web.cli`), which writes the same file through
:func:`write_password`.

Why a module of its own: the page's other handlers (status, settings, logs)
only need to know who is logged in, and the password's handlers (with the
file, scrypt off the event loop and the rate limit) made
:mod:`appliance.web.server` too long to read. The decisions are
:mod:`appliance.web.guard`'s; here they are carried out.

Changing the password needs the current one and is held to the login's rate
limit (a wrong current password counts as a wrong login, from the same
address, in the same limiter: the change form is no way round it). A change
ends every session, since each was opened with the old password; the one that
made the change goes on in a new session.

Sessions live in memory only, so a service restart logs everybody out. Keeping
them on disk would put a logged-in cookie's secret in the state directory for
little gain (a restart is rare and logging in again is cheap).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from appliance.files import write_atomic
from appliance.web import pages
from appliance.web.guard import (
    LoginLimiter,
    Session,
    Sessions,
    hash_password,
    password_problem,
    verify_password,
)

__all__ = [
    "PASSWORD_NAME",
    "SESSION_KEY",
    "Account",
    "html",
    "see_other",
    "write_password",
]

logger = logging.getLogger(__name__)

#: The password hash's file in the page's state directory.
PASSWORD_NAME = "web-password"
#: The request's session, set by the page's middleware.
SESSION_KEY = web.RequestKey("session", Session)


def html(text: str, status: int = 200) -> web.Response:
    """An HTML response."""
    return web.Response(text=text, status=status, content_type="text/html")


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (a response, so the middleware adds the cookie)."""
    return web.Response(status=303, headers={"Location": location})


def write_password(
    path: Path, password: str, owner: tuple[int, int] | None = None
) -> None:
    """Keep ``password``'s scrypt hash in ``path`` (mode 0600, atomically).

    The first visit, a change on the page and ``appliance web-password``
    all write it here. Slow (scrypt) and blocking: not on the event loop.

    Raises:
        OSError: the directory is not writable.
    """
    hashed = hash_password(password)
    write_atomic(path, (hashed + "\n").encode(), mode=0o600, owner=owner)


def _csrf(request: web.Request) -> str:
    return request[SESSION_KEY].csrf


class Account:
    """The password kept in ``password_file`` and the sessions it opened.

    Args:
        password_file: where the scrypt hash is kept (mode 0600).
        clock: monotonic seconds (sessions, rate limit).
    """

    def __init__(self, password_file: Path, clock: Callable[[], float]) -> None:
        self.password_file = password_file
        self.sessions = Sessions()
        self._clock = clock
        self._limiter = LoginLimiter()
        self._setting_up = asyncio.Lock()
        self._checking = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        """The password's pages."""
        return [
            web.get("/setup", self._setup_form),
            web.post("/setup", self._setup),
            web.get("/login", self._login_form),
            web.post("/login", self._login),
            web.post("/logout", self._logout),
            web.get("/password", self._password_form),
            web.post("/password", self._change),
        ]

    # --- first visit -----------------------------------------------------------

    async def _setup_form(self, request: web.Request) -> web.StreamResponse:
        if self.password_file.exists():
            raise web.HTTPSeeOther("/login")
        return html(pages.setup_page(_csrf(request)))

    async def _setup(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        password, repeat = str(form.get("password", "")), str(form.get("repeat", ""))
        problem = password_problem(password, repeat)
        if problem is not None:
            return html(pages.setup_page(_csrf(request), problem), 400)
        async with self._setting_up:
            if self.password_file.exists():  # someone else was first
                raise web.HTTPSeeOther("/login")
            await self._store(password)
        logger.warning("web page: the password was set")
        return self._logged_in(request, "/status")

    async def _store(self, password: str) -> None:
        await asyncio.to_thread(write_password, self.password_file, password)

    def _logged_in(self, request: web.Request, target: str) -> web.StreamResponse:
        session = self.sessions.log_in(request[SESSION_KEY], self._clock())
        request[SESSION_KEY] = session
        return see_other(target)

    # --- login -----------------------------------------------------------------

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        if not self.password_file.exists():
            raise web.HTTPSeeOther("/setup")
        if request[SESSION_KEY].logged_in:
            raise web.HTTPSeeOther("/status")
        return html(pages.login_page(_csrf(request)))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        # One password check at a time: a burst of parallel guesses is held
        # to the limit (each sees the failures before it), and scrypt's
        # memory and CPU are spent once at a time.
        async with self._checking:
            form = await request.post()
            refused = await self._check(
                request, str(form.get("password", "")), pages.login_page
            )
            if refused is not None:
                return refused
            logger.info("web page: logged in from %s", request.remote or "?")
            return self._logged_in(request, "/status")

    async def _check(
        self,
        request: web.Request,
        password: str,
        form_page: Callable[[str, str], str],
    ) -> web.StreamResponse | None:
        """None when ``password`` is the page's; else the answer refusing it.

        Held to the rate limit of the request's address either way.
        """
        client = request.remote or "?"
        wait = self._limiter.wait_s(client, self._clock())
        if wait > 0:
            return self._too_many(request, wait, form_page)
        try:
            stored = await asyncio.to_thread(self.password_file.read_text)
        except FileNotFoundError:
            raise web.HTTPSeeOther("/setup") from None
        if await asyncio.to_thread(verify_password, password, stored):
            self._limiter.succeeded(client)
            return None
        wait = self._limiter.failed(client, self._clock())
        logger.warning("web page: wrong password from %s", client)
        if wait > 0:
            return self._too_many(request, wait, form_page)
        return html(form_page(_csrf(request), "Wrong password."), 401)

    def _too_many(
        self,
        request: web.Request,
        wait: float,
        form_page: Callable[[str, str], str],
    ) -> web.StreamResponse:
        error = f"Too many wrong passwords: try again in {wait:.0f} s."
        response = html(form_page(_csrf(request), error), 429)
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.end(request[SESSION_KEY].sid)
        request[SESSION_KEY] = self.sessions.visit(None, self._clock())
        raise web.HTTPSeeOther("/login")

    # --- change ----------------------------------------------------------------

    async def _password_form(self, request: web.Request) -> web.StreamResponse:
        done = request.query.get("done") == "1"
        notice = "Changed. Every other session was logged out." if done else ""
        return html(pages.password_page(_csrf(request), notice=notice))

    async def _change(self, request: web.Request) -> web.StreamResponse:
        async with self._checking:
            form = await request.post()
            refused = await self._check(
                request, str(form.get("current", "")), pages.password_page
            )
            if refused is not None:
                return refused
            password = str(form.get("password", ""))
            problem = password_problem(password, str(form.get("repeat", "")))
            if problem is not None:
                return html(pages.password_page(_csrf(request), problem), 400)
            await self._store(password)
            self.sessions.end_all()
        logger.warning(
            "web page: the password was changed from %s; every session ended",
            request.remote or "?",
        )
        return self._logged_in(request, "/password?done=1")
