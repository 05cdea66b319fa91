"""The provisioner's HTTP service (aiohttp): enrollment, tokens, the approval page.

Endpoints for phones (JSON; errors are ``{"error", "error_description",
"code"}`` as RFC 6749 §5.2 shapes them, plus a Twilio-style ``code``):

* ``POST /api/device/authorize``: RFC 8628 §3.1/§3.2, a device code.
* ``POST /api/device/token`` with ``grant_type =
  urn:ietf:params:oauth:grant-type:device_code`` and ``device_code``: §3.4;
  400 with ``authorization_pending``/``slow_down``/``expired_token``/
  ``access_denied`` (§3.5) until approved, then the phone's device
  credential in ``access_token`` (``token_type = "device_credential"``),
  its identity and directory name. The credential is shown this once; the
  database keeps its scrypt hash.
* ``POST /api/token`` with ``Authorization: Bearer <device credential>``: a
  Twilio Access Token (VoiceGrant, incoming allowed, the outgoing TwiML App),
  ``ttl`` seconds long; 401 ``invalid_client`` (20003) for a wrong
  credential, 403 ``phone_revoked`` (20403) for a revoked phone.

For the admin: the approval page (``/login``, ``/device``, ``/admin``; HTML,
session cookie HttpOnly + SameSite=Strict, a CSRF token in every form) and
the same actions as JSON under ``/api/admin/`` (session cookie plus the
``X-CSRF-Token`` header).

Blocking work (SQLite, scrypt) runs in threads (``asyncio.to_thread``); the
grant and session logic are the pure cores of :mod:`.grant` and :mod:`.admin`
with the loop's clock as ``now``. Why aiohttp: one maintained asyncio library
that is both the server here and the phone's HTTP client, with cookies, forms
and a test-free real server on 127.0.0.1; the websockets package the project
already uses serves no HTTP beyond the upgrade.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.errors import ProvisioningError
from appliance.provisioning import pages
from appliance.provisioning.admin import Session, Sessions
from appliance.provisioning.config import ProvisionerConfig
from appliance.provisioning.grant import DeviceGrants, GrantError, verify_secret
from appliance.provisioning.store import PhoneStore, parse_credential
from appliance.tokens import create_access_token

__all__ = ["DEVICE_GRANT_TYPE", "IDENTITY_RE", "Provisioner"]

logger = logging.getLogger(__name__)

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
#: Client names the approval page accepts (what the panel's directory accepts).
IDENTITY_RE = re.compile(r"[A-Za-z0-9_.@-]{1,121}")
_COOKIE = "session"
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, error: str, code: int, detail: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": detail, "code": code},
        status=status,
        headers=_HEADERS,
    )


def _grant_error(exc: GrantError) -> web.Response:
    # RFC 8628 §3.5 / RFC 6749 §5.2: every grant error is a 400.
    return _error(400, exc.error, exc.code, exc.detail)


def _forbidden(detail: str) -> web.HTTPForbidden:
    body = {"error": "access_denied", "error_description": detail, "code": 20403}
    return web.HTTPForbidden(text=json.dumps(body), content_type="application/json")


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context (Python's defaults for ciphers).

    Raises:
        ProvisioningError: the files cannot be loaded.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ProvisioningError(f"cannot load the TLS certificate: {exc}") from exc
    return context


class Provisioner:
    """The service: ``async with Provisioner(config) as p: ... p.url``."""

    def __init__(self, config: ProvisionerConfig) -> None:
        self.config = config
        self.store = PhoneStore(config.database)
        self.grants = DeviceGrants(
            ttl_s=config.device_code_ttl, interval_s=config.poll_interval
        )
        self.sessions = Sessions()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Provisioner:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.store.create)
        app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.post("/api/device/authorize", self._authorize),
                web.post("/api/device/token", self._device_token),
                web.post("/api/token", self._token),
                web.post("/api/admin/login", self._api_login),
                web.get("/api/admin/phones", self._api_phones),
                web.get("/api/admin/pending", self._api_pending),
                web.post("/api/admin/approve", self._api_approve),
                web.post("/api/admin/deny", self._api_deny),
                web.post("/api/admin/revoke", self._api_revoke),
                web.post("/api/admin/rename", self._api_rename),
                web.get("/", self._root),
                web.get("/login", self._login_form),
                web.post("/login", self._login),
                web.post("/logout", self._logout),
                web.get("/device", self._device_form),
                web.post("/device", self._device_lookup),
                web.post("/device/decide", self._device_decide),
                web.get("/admin", self._phones_page),
                web.post("/admin/revoke", self._form_revoke),
                web.post("/admin/rename", self._form_rename),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = None
        if self.config.tls_cert_file and self.config.tls_key_file:
            context = await asyncio.to_thread(
                _server_context, self.config.tls_cert_file, self.config.tls_key_file
            )
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=context
        )
        await site.start()
        host, port = self._runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if context is not None else "http"
        self.url = self.config.public_url or f"{scheme}://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    @web.middleware
    async def _headers(self, request: web.Request, handler: _Handler) -> Any:
        response = await handler(request)
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # --- phones: RFC 8628 --------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        info = form.get("client_info", "")
        try:
            auth = self.grants.issue(self._now(), info if isinstance(info, str) else "")
        except GrantError as exc:
            return _grant_error(exc)
        uri = f"{self.url}/device"
        logger.info("device code issued to %s", request.remote)
        return web.json_response(
            {  # RFC 8628 §3.2
                "device_code": auth.device_code,
                "user_code": auth.user_code,
                "verification_uri": uri,
                "verification_uri_complete": f"{uri}?user_code={auth.user_code}",
                "expires_in": int(auth.expires_in),
                "interval": int(auth.interval),
            },
            headers=_HEADERS,
        )

    async def _device_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != DEVICE_GRANT_TYPE:
            return _error(400, "unsupported_grant_type", 20001, "use the device code")
        device_code = form.get("device_code")
        if not isinstance(device_code, str) or not device_code:
            return _error(400, "invalid_request", 20001, "device_code is missing")
        try:
            approved = self.grants.poll(device_code, self._now())
        except GrantError as exc:
            return _grant_error(exc)
        try:
            credential = await asyncio.to_thread(
                self.store.enroll, approved.identity, approved.name, time.time()
            )
        except ProvisioningError as exc:
            logger.error("cannot enroll %s: %s", approved.identity, exc)
            return _error(500, "server_error", 20500, "cannot store the phone")
        logger.info("phone %s enrolled as %s", credential.sid, approved.identity)
        return web.json_response(
            {
                "access_token": str(credential),
                "token_type": "device_credential",
                "identity": approved.identity,
                "name": approved.name,
            },
            headers=_HEADERS,
        )

    async def _token(self, request: web.Request) -> web.Response:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise ProvisioningError("no bearer credential")
            credential = parse_credential(value)
        except ProvisioningError:
            return _error(401, "invalid_client", 20003, "no valid device credential")
        try:
            phone = await asyncio.to_thread(self.store.authenticate, credential)
        except ProvisioningError as exc:
            logger.error("cannot check a credential: %s", exc)
            return _error(500, "server_error", 20500, "phone database unavailable")
        if phone is None:
            logger.warning("token refused: wrong credential from %s", request.remote)
            return _error(401, "invalid_client", 20003, "unknown device credential")
        if phone.revoked:
            logger.info("token refused: phone %s is revoked", phone.sid)
            return _error(403, "phone_revoked", 20403, "this phone has been revoked")
        config = self.config
        now = time.time()
        token = create_access_token(
            account_sid=config.account_sid,
            api_key_sid=config.api_key_sid,
            api_secret=config.api_key_secret.reveal(),
            identity=phone.identity,
            ttl=config.token_ttl,
            now=now,
            outgoing_application_sid=config.outgoing_application_sid,
            incoming_allow=True,
        )
        await asyncio.to_thread(self.store.token_issued, phone.sid, now)
        logger.info("token issued to %s (%s)", phone.sid, phone.identity)
        return web.json_response(
            {
                "token": token,
                "identity": phone.identity,
                "name": phone.name,
                "ttl": config.token_ttl,
            },
            headers=_HEADERS,
        )

    # --- admin: sessions -----------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(_COOKIE), self._now())

    def _set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(
            _COOKIE,
            session.sid,
            httponly=True,
            samesite="Strict",
            secure=self.url.startswith("https://"),
            path="/",
        )

    async def _check_password(self, request: web.Request, password: str) -> Session:
        """Log in with ``password`` (rate-limited); the new session.

        Raises:
            GrantError: too many failures (20429) or a wrong password (20003).
        """
        client = request.remote or "?"
        self.sessions.check_login_allowed(client, self._now())
        stored = self.config.admin_password_hash.reveal()
        if not await asyncio.to_thread(verify_secret, password, stored):
            self.sessions.login_failed(client, self._now())
            logger.warning("wrong admin password from %s", client)
            raise GrantError("access_denied", 20003, "wrong password")
        logger.info("admin logged in from %s", client)
        return self.sessions.logged_in(self._session(request), self._now())

    def _admin(self, request: web.Request, csrf: str | None) -> Session:
        """The logged-in session of a state-changing request with its CSRF token.

        Raises:
            web.HTTPForbidden: not logged in, or a bad CSRF token.
        """
        session = self._session(request)
        if session is None or not session.logged_in:
            raise _forbidden("log in first")
        if csrf is not None and not session.csrf_ok(csrf):
            raise _forbidden("bad CSRF token")
        return session

    # --- admin: JSON ---------------------------------------------------------------

    async def _json(self, request: web.Request) -> Mapping[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        return body

    def _api_admin(self, request: web.Request) -> Session:
        return self._admin(request, request.headers.get("X-CSRF-Token", ""))

    async def _api_login(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            session = await self._check_password(request, str(body.get("password")))
        except GrantError as exc:
            status = 429 if exc.code == 20429 else 401
            return _error(status, exc.error, exc.code, exc.detail)
        response = web.json_response({"csrf": session.csrf})
        self._set_cookie(response, session)
        return response

    async def _api_phones(self, request: web.Request) -> web.Response:
        self._admin(request, None)
        phones = await asyncio.to_thread(self.store.list)
        return web.json_response(
            [
                {
                    "sid": p.sid,
                    "identity": p.identity,
                    "name": p.name,
                    "revoked": p.revoked,
                    "last_token_at": p.last_token_at,
                }
                for p in phones
            ]
        )

    async def _api_pending(self, request: web.Request) -> web.Response:
        self._admin(request, None)
        return web.json_response(
            [
                {"user_code": g.user_code, "client_info": g.client_info}
                for g in self.grants.pending(self._now())
            ]
        )

    async def _api_approve(self, request: web.Request) -> web.Response:
        self._api_admin(request)
        body = await self._json(request)
        identity, name = str(body.get("identity", "")), str(body.get("name", ""))
        if not IDENTITY_RE.fullmatch(identity):
            return _error(400, "invalid_request", 20001, "invalid identity")
        try:
            self.grants.approve(
                str(body.get("user_code", "")),
                identity,
                name[:64],
                request.remote or "?",
                self._now(),
            )
        except GrantError as exc:
            return _grant_error(exc)
        logger.info("code approved for %s", identity)
        return web.json_response({"approved": identity})

    async def _api_deny(self, request: web.Request) -> web.Response:
        self._api_admin(request)
        body = await self._json(request)
        try:
            self.grants.deny(
                str(body.get("user_code", "")), request.remote or "?", self._now()
            )
        except GrantError as exc:
            return _grant_error(exc)
        return web.json_response({"denied": True})

    async def _api_revoke(self, request: web.Request) -> web.Response:
        self._api_admin(request)
        body = await self._json(request)
        return await self._do(self.store.revoke, str(body.get("sid")), time.time())

    async def _api_rename(self, request: web.Request) -> web.Response:
        self._api_admin(request)
        body = await self._json(request)
        name = str(body.get("name", ""))[:64]
        return await self._do(self.store.rename, str(body.get("sid")), name)

    async def _do(self, action: Callable[..., None], *args: Any) -> web.Response:
        try:
            await asyncio.to_thread(action, *args)
        except ProvisioningError as exc:
            return _error(404, "not_found", 20404, str(exc))
        return web.json_response({"ok": True})

    # --- admin: HTML -----------------------------------------------------------------

    def _html(
        self, text: str, session: Session | None = None, status: int = 200
    ) -> web.Response:
        response = web.Response(text=text, content_type="text/html", status=status)
        if session is not None:
            self._set_cookie(response, session)
        return response

    def _require_login(self, request: web.Request) -> Session:
        session = self._session(request)
        if session is None or not session.logged_in:
            raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe=""))
        return session

    async def _form(self, request: web.Request) -> tuple[Session, Mapping[str, str]]:
        raw = await request.post()
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        session = self._require_login(request)
        self._admin(request, form.get("csrf", ""))
        return session, form

    async def _root(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/admin")

    async def _login_form(self, request: web.Request) -> web.Response:
        session = self._session(request) or self.sessions.new(self._now())
        return self._html(
            pages.login_page(session.csrf, request.query.get("next", "/admin")),
            session,
        )

    async def _login(self, request: web.Request) -> web.Response:
        raw = await request.post()
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        session = self._session(request)
        next_url = form.get("next", "/admin")
        if not next_url.startswith("/") or next_url[1:2] in ("/", "\\"):
            next_url = "/admin"  # no open redirect ("//host", "/\\host")
        if session is None or not session.csrf_ok(form.get("csrf", "")):
            session = self.sessions.new(self._now())
            return self._html(
                pages.login_page(session.csrf, next_url, "Session expired; retry."),
                session,
                403,
            )
        try:
            new = await self._check_password(request, form.get("password", ""))
        except GrantError as exc:
            status = 429 if exc.code == 20429 else 401
            return self._html(
                pages.login_page(session.csrf, next_url, exc.detail), session, status
            )
        response = web.HTTPSeeOther(next_url)
        self._set_cookie(response, new)
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        session, _ = await self._form(request)
        self.sessions.logout(session)
        raise web.HTTPSeeOther("/login")

    async def _device_form(self, request: web.Request) -> web.Response:
        session = self._require_login(request)
        code = request.query.get("user_code", "")
        return self._html(pages.device_page(session.csrf, code[:20], None))

    async def _device_lookup(self, request: web.Request) -> web.Response:
        session, form = await self._form(request)
        code = form.get("user_code", "")[:20]
        try:
            pending = self.grants.lookup(code, session.sid, self._now())
        except GrantError as exc:
            return self._html(
                pages.device_page(session.csrf, code, None, exc.detail), status=400
            )
        return self._html(pages.device_page(session.csrf, code, pending))

    async def _device_decide(self, request: web.Request) -> web.Response:
        session, form = await self._form(request)
        code = form.get("user_code", "")[:20]
        identity = form.get("identity", "")
        try:
            if form.get("action") == "deny":
                self.grants.deny(code, session.sid, self._now())
                return self._html(pages.done_page(f"Code {code} denied."))
            if not IDENTITY_RE.fullmatch(identity):
                pending = self.grants.lookup(code, session.sid, self._now())
                return self._html(
                    pages.device_page(
                        session.csrf,
                        code,
                        pending,
                        "Identity: letters, digits, _ . @ - (up to 121).",
                    ),
                    status=400,
                )
            name = form.get("name", "")[:64]
            self.grants.approve(code, identity, name, session.sid, self._now())
        except GrantError as exc:
            return self._html(
                pages.device_page(session.csrf, code, None, exc.detail), status=400
            )
        logger.info("code approved for %s", identity)
        return self._html(
            pages.done_page(f"Approved: the phone becomes {identity} in a few seconds.")
        )

    async def _phones_page(self, request: web.Request) -> web.Response:
        session = self._require_login(request)
        phones = await asyncio.to_thread(self.store.list)
        return self._html(
            pages.phones_page(session.csrf, phones, self.grants.pending(self._now()))
        )

    async def _form_revoke(self, request: web.Request) -> web.Response:
        _, form = await self._form(request)
        await self._do(self.store.revoke, form.get("sid", ""), time.time())
        raise web.HTTPSeeOther("/admin")

    async def _form_rename(self, request: web.Request) -> web.Response:
        _, form = await self._form(request)
        await self._do(
            self.store.rename, form.get("sid", ""), form.get("name", "")[:64]
        )
        raise web.HTTPSeeOther("/admin")
