"""The web page's aiohttp adapter, and :func:`start_web` for the service.

Everything decided here is decided by :mod:`appliance.web.guard` (who may
do what) or rendered by :mod:`appliance.web.pages`; this module reads the
clock, the files and the request, and carries the results out. A setting
changed on the page goes to the front panel as a fact
(:meth:`~appliance.ui.controller.PanelController.apply`), exactly as a key
press would: the panel applies it to the audio devices and saves it in
``ui.state_file`` with the same writer, so it applies at once and survives a
restart, and the OLED shows it.

The page is HTTPS only (:mod:`appliance.web.tls`), so its cookie can be
``Secure``; it is also ``HttpOnly`` and ``SameSite=Strict`` and named with the
``__Host-`` prefix (no ``Domain``, path ``/``). Responses carry a
Content-Security-Policy that allows no script at all, and are not cached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from aiohttp import web

from appliance import __version__
from appliance.cadence import COUNTRIES
from appliance.calllog.recorder import CallLogRecorder
from appliance.errors import ApplianceError
from appliance.log import LineFormatter, RedactionFilter
from appliance.phone.device import Device
from appliance.tokens import describe_unverified
from appliance.ui.controller import PanelController
from appliance.ui.panel import Panel
from appliance.ui.settings import UiConfig
from appliance.ui.volume import VOLUME_MAX_LEVEL, VOLUME_ROLES, volume_range
from appliance.update.settings import UpdateConfig
from appliance.web import pages, tls
from appliance.web.account import PASSWORD_NAME, SESSION_KEY, Account, see_other
from appliance.web.settings import WebConfig

__all__ = [
    "COOKIE",
    "PASSWORD_NAME",
    "HasController",
    "ServiceConfig",
    "WebPage",
    "start_web",
]

logger = logging.getLogger(__name__)

COOKIE = "__Host-phone"
LOG_LINES = 200
#: A test sound that has not finished playing by then has failed.
TEST_SOUND_LIMIT_S = 15.0
_NOTICES = {
    "applied": "Applied.",
    "reverted": "The configured directory is back.",
    "tested": "The test sound played.",
    "test-failed": "The test sound could not be played (see Logs).",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Pages a visitor may see before logging in (``/password`` needs a login).
_OPEN = frozenset({"/login", "/setup", "/style.css"})


class ServiceConfig(Protocol):
    """What the page reads of the service configuration (``AppConfig``)."""

    @property
    def web(self) -> WebConfig: ...
    @property
    def ui(self) -> UiConfig: ...
    @property
    def update(self) -> UpdateConfig: ...
    @property
    def token_file(self) -> Path | None: ...
    @property
    def provisioner_url(self) -> str | None: ...
    @property
    def credential_file(self) -> Path: ...


class HasController(Protocol):
    """The front panel the composition root opened (its controller)."""

    @property
    def controller(self) -> PanelController: ...


class LogRing(logging.Handler):
    """The newest log lines, redacted as the journal's are."""

    def __init__(self, size: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.addFilter(RedactionFilter())
        self.setFormatter(LineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {self.format(record)}")


class WebPage:
    """The page of one phone; ``async with`` or :meth:`start` / :meth:`aclose`.

    Args:
        config: the service configuration (status facts, ``[web]``).
        device: the engine (registration, identity).
        controller: the front panel's controller (settings), or None.
        calls: the call log.
        directory: where the password hash, key and certificate live.
        restart: asks the service to restart.
        clock: monotonic seconds (sessions, rate limit).
    """

    def __init__(
        self,
        config: ServiceConfig,
        device: Device,
        controller: PanelController | None,
        calls: CallLogRecorder,
        directory: Path,
        restart: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._device = device
        self._controller = controller
        self._calls = calls
        self._directory = directory
        self._restart = restart
        self._clock = clock
        self._account = Account(directory / PASSWORD_NAME, clock)
        self._runner: web.AppRunner | None = None
        self._ring = LogRing()
        self._fingerprint = ""
        self.url = ""

    @property
    def password_file(self) -> Path:
        """Where the password's scrypt hash is kept."""
        return self._account.password_file

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Make the certificate if needed and listen.

        Raises:
            OSError: the state directory or the port is not usable.
        """
        cert, key = await asyncio.to_thread(tls.load_or_create, self._directory)
        self._fingerprint = await asyncio.to_thread(tls.fingerprint, cert)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.get("/", self._root),
                web.get("/style.css", self._style),
                *self._account.routes(),
                web.get("/status", self._status),
                web.get("/settings", self._settings),
                web.post("/settings/volume", self._set_volume),
                web.post("/settings/dnd", self._set_dnd),
                web.post("/settings/test", self._test_audio),
                web.post("/settings/directory", self._edit_directory),
                web.get("/settings/directory/revert", self._ask_revert),
                web.post("/settings/directory/revert", self._revert_directory),
                web.post("/settings/country", self._set_country),
                web.get("/calls", self._calls_page),
                web.get("/logs", self._logs),
                web.post("/restart", self._restart_now),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            web_config = self._config.web
            site = web.TCPSite(
                runner, web_config.address or None, web_config.port, ssl_context=context
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logging.getLogger().addHandler(self._ring)
        port = runner.addresses[0][1]
        self.url = f"https://{web_config.address or '127.0.0.1'}:{port}/"
        logger.info(
            "web page on port %d (certificate SHA-256 %s)", port, self._fingerprint
        )

    async def aclose(self) -> None:
        """Stop listening."""
        logging.getLogger().removeHandler(self._ring)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebPage:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # --- the guard -------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        session = self._account.sessions.visit(
            request.cookies.get(COOKIE), self._clock()
        )
        request[SESSION_KEY] = session
        if request.path not in _OPEN and not session.logged_in:
            target = "/login" if self.password_file.exists() else "/setup"
            response: web.StreamResponse = see_other(target)
        else:
            try:
                if request.method == "POST":
                    form = await request.post()
                    token = form.get("csrf")
                    if not isinstance(token, str) or not session.form_ok(token):
                        logger.warning("web page: a form without its token refused")
                        raise web.HTTPForbidden(
                            text=pages.message_page(
                                "Refused", "The form was not this page's own."
                            ),
                            content_type="text/html",
                        )
                response = await handler(request)
            except web.HTTPException as exc:
                # As a plain response, so the cookie and headers go with it.
                response = web.Response(
                    status=exc.status,
                    reason=exc.reason,
                    headers=exc.headers,
                    body=exc.body,
                )
        session = request[SESSION_KEY]  # a login replaces it
        response.set_cookie(
            COOKIE,
            session.sid,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        response.headers.update(_HEADERS)
        return response

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html")

    @staticmethod
    def _csrf(request: web.Request) -> str:
        return request[SESSION_KEY].csrf

    # --- pages -----------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/status")

    async def _style(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=pages.STYLE, content_type="text/css")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        sockname = (
            request.transport.get_extra_info("sockname") if request.transport else None
        )
        address = str(sockname[0]) if sockname else "unknown"
        expiry = await asyncio.to_thread(self._token_expiry)
        config = self._config
        if config.provisioner_url:
            provisioned = "by the provisioner " + config.provisioner_url
            known = config.credential_file.exists()
            provisioned += "" if known else " (waiting for approval)"
        else:
            provisioned = "a token file (not provisioned)"
        update = (
            f"{config.update.url} ({config.update.policy})"
            if config.update.enabled
            else "off (no update.url)"
        )
        # What the OLED shows of provisioning and updates now.
        live = (
            pages.live_rows(self._controller.view())
            if self._controller is not None
            else []
        )
        entries = self._calls.entries()
        sections = [
            (
                "Phone",
                [
                    ("Identity", self._device.identity or "none yet"),
                    ("Registration", self._device.status()),
                    ("Network address", address),
                    ("Software", __version__),
                    ("Page certificate SHA-256", self._fingerprint),
                ],
            ),
            (
                "Provisioning and updates",
                [
                    ("Identity from", provisioned),
                    ("Token expires", expiry),
                    ("Updates", update),
                    *live,
                ],
            ),
            ("Last call", pages.last_call_rows(entries[0] if entries else None)),
        ]
        return self._html(pages.status_page(self._csrf(request), sections))

    def _token_expiry(self) -> str:
        path = self._config.token_file
        if self._config.provisioner_url or path is None:
            return "renewed by the provisioner before it expires"
        try:
            claims = describe_unverified(path.read_text().strip())["claims"]
        except (OSError, ApplianceError):
            return "unknown (the token file cannot be read)"
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return "unknown"
        return datetime.fromtimestamp(exp).astimezone().strftime("%Y-%m-%d %H:%M %Z")

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        notice = _NOTICES.get(request.query.get("done", ""), "")
        return self._settings_page(request, notice)

    def _settings_page(
        self, request: web.Request, notice: str = "", status: int = 200
    ) -> web.StreamResponse:
        controller = self._controller
        panel = controller.panel if controller is not None else None
        text = pages.settings_page(
            self._csrf(request),
            volume=panel.volume_levels() if panel is not None else None,
            max_level=VOLUME_MAX_LEVEL,
            dnd=panel.dnd if panel is not None else None,
            dnd_mode=self._config.ui.dnd_mode,
            devices=self._devices(),
            directory=self._config.ui.directory if panel is None else panel.directory,
            directory_edited=panel is not None and panel.edited_directory is not None,
            country=self._config.ui.country if panel is None else panel.country,
            country_chosen=panel is not None and panel.chosen_country is not None,
            countries=sorted({tones.country for tones in COUNTRIES.values()}),
            notice=notice,
        )
        return self._html(text, status)

    def _devices(self) -> list[tuple[str, str, str]]:
        audio = self._device.audio
        return [
            (role, name, ", ".join(sorted(d.label for d in devices.get())) or "none")
            for role, name, devices in (
                ("speaker", "Call audio", audio.speaker_devices),
                ("ringtone", "Ringer", audio.ringtone_devices),
            )
        ]

    async def _test_audio(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        audio = self._device.audio
        role = form.get("role")
        devices = (
            audio.ringtone_devices if role == "ringtone" else audio.speaker_devices
        )
        try:
            async with asyncio.timeout(TEST_SOUND_LIMIT_S):
                await devices.test()
        except (ApplianceError, TimeoutError) as exc:
            logger.warning("web page: the %s test sound failed: %s", role, exc)
            raise web.HTTPSeeOther("/settings?done=test-failed") from None
        raise web.HTTPSeeOther("/settings?done=tested")

    def _panel_controller(self) -> PanelController:
        if self._controller is None:
            raise web.HTTPConflict(text="the front panel is off")
        return self._controller

    async def _set_volume(self, request: web.Request) -> web.StreamResponse:
        controller = self._panel_controller()
        form = await request.post()
        try:
            levels = _form_levels(form)
        except ValueError as exc:  # all or nothing: no level of the form is set
            return self._settings_page(request, f"Not saved: {exc}.", 400)
        for role, level in levels.items():
            controller.apply(functools.partial(_set_level, role, level))
        raise web.HTTPSeeOther("/settings?done=applied")

    async def _set_dnd(self, request: web.Request) -> web.StreamResponse:
        controller = self._panel_controller()
        form = await request.post()
        on = form.get("on") == "1"
        controller.apply(lambda panel, now: panel.choose_dnd(on, now))
        raise web.HTTPSeeOther("/settings?done=applied")

    async def _edit_directory(self, request: web.Request) -> web.StreamResponse:
        controller = self._panel_controller()
        form = await request.post()
        code = str(form.get("code", "")).strip()
        name = None if form.get("remove") == "1" else str(form.get("name", "")).strip()
        problems: list[str | None] = []
        controller.apply(
            lambda panel, now: problems.append(panel.edit_directory(code, name, now))
        )
        if problems[0] is not None:
            return self._settings_page(request, f"Not saved: {problems[0]}.", 400)
        logger.info(
            "web page: directory entry %s", "removed" if name is None else "set"
        )
        raise web.HTTPSeeOther("/settings?done=applied")

    async def _ask_revert(self, request: web.Request) -> web.StreamResponse:
        panel = self._panel_controller().panel
        edited = panel.edited_directory
        if edited is None:
            raise web.HTTPSeeOther("/settings")
        text = pages.revert_page(self._csrf(request), edited, self._config.ui.directory)
        return self._html(text)

    async def _revert_directory(self, request: web.Request) -> web.StreamResponse:
        controller = self._panel_controller()
        form = await request.post()
        if form.get("confirm") != "1":
            return self._settings_page(request, "Not reverted: not confirmed.", 400)
        reverted: list[bool] = []
        controller.apply(
            lambda panel, now: reverted.append(panel.revert_directory(now))
        )
        if reverted[0]:
            logger.info("web page: directory reverted to [ui.directory]")
        raise web.HTTPSeeOther("/settings?done=reverted")

    async def _set_country(self, request: web.Request) -> web.StreamResponse:
        controller = self._panel_controller()
        form = await request.post()
        country = str(form.get("country", ""))
        problems: list[str | None] = []
        controller.apply(
            lambda panel, now: problems.append(panel.choose_country(country, now))
        )
        if problems[0] is not None:
            return self._settings_page(request, f"Not saved: {problems[0]}.", 400)
        raise web.HTTPSeeOther("/settings?done=applied")

    async def _calls_page(self, request: web.Request) -> web.StreamResponse:
        rows = [pages.call_row(e) for e in self._calls.entries()]
        return self._html(pages.calls_page(self._csrf(request), rows))

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        lines = list(self._ring.lines)[::-1]
        return self._html(pages.logs_page(self._csrf(request), lines))

    async def _restart_now(self, request: web.Request) -> web.StreamResponse:
        logger.warning("web page: restart asked for")
        # After this answer has gone out.
        asyncio.get_running_loop().call_later(0.5, self._restart)
        return self._html(
            pages.message_page("Restarting", "The phone service is restarting.")
        )


def _set_level(role: str, level: int, panel: Panel, now: float) -> None:
    panel.set_volume_level(role, level, now)


def _form_levels(form: Mapping[str, object]) -> dict[str, int]:
    """The level of each volume role the settings form gives.

    A role the form leaves out keeps its level. The page only offers levels
    in each role's range; anything else comes from a crafted request, and is
    refused rather than clamped, so that what the page answers is what the
    phone did.

    Raises:
        ValueError: a level is not a whole number in its role's range (the
            message names the field and the range), or the form gives none.
    """
    levels: dict[str, int] = {}
    for role in VOLUME_ROLES:
        if role not in form:
            continue
        raw = form[role]
        low, high = volume_range(role)
        text = raw.strip() if isinstance(raw, str) else ""
        if re.fullmatch(r"[0-9]{1,2}", text) is None or not low <= int(text) <= high:
            given = repr(raw[:20]) if isinstance(raw, str) else "a file"
            raise ValueError(
                f"{pages.VOLUME_NAMES[role].lower()} ({role}) must be a whole "
                f"number from {low} to {high}, not {given}"
            )
        levels[role] = int(text)
    if not levels:
        raise ValueError(f"no volume given ({' or '.join(VOLUME_ROLES)})")
    return levels


async def start_web(
    config: ServiceConfig,
    device: Device,
    front: HasController | None,
    calls: CallLogRecorder,
    stack: contextlib.AsyncExitStack,
    stop: asyncio.Event,
    status: list[int],
) -> WebPage | None:
    """Serve the page if ``[web] enabled``; it stops with ``stack``.

    Restart sets ``status`` to the updater's restart status (systemd starts
    the unit again) and ``stop``. A page that cannot start (no state
    directory, the port taken) is logged and left out: the phone still takes
    calls.
    """
    if not config.web.enabled:
        return None
    directory = config.web.directory()
    if directory is None:
        logger.info("web page off: no state directory (web.state_dir)")
        return None

    def restart() -> None:
        from appliance.update.phone_updater import RESTART_EXIT_STATUS

        status[:] = [RESTART_EXIT_STATUS]
        stop.set()

    page = WebPage(
        config,
        device,
        front.controller if front is not None else None,
        calls,
        directory,
        restart,
    )
    try:
        await page.start()
    except OSError as exc:
        logger.error("web page off: %s", exc)
        return None
    stack.push_async_callback(page.aclose)
    return page
