"""The phone's provisioning client: drives :class:`~.flow.PhoneFlow` over HTTP.

One task (:meth:`PhoneProvisioning.run`) owns an aiohttp session, performs
the flow's actions one at a time, sleeps until the flow's next deadline (or
until :meth:`PhoneProvisioning.token_will_expire` wakes it) and hands the
flow what it observed. Every answer is validated before the flow sees it: a
malformed or unexpected response counts as a failed request (retried with
backoff), never as a credential or a token. The device credential is only
ever sent in the ``Authorization`` header and never logged.

TLS trust follows the credential (:mod:`.trust`): the session is rebuilt
when a credential with another CA or pin is installed. A USB file replaces a
credential the phone already holds only after one token request with the
file's credential and trust succeeded, so a wrong pin or a stale file never
costs the phone a working identity. :meth:`PhoneProvisioning.reset` forgets
the credential (``appliance provision reset``, once the panel confirmed it).

The composition root (:mod:`appliance.app`) gives it callbacks: apply a
token to the Device, show a :class:`~.flow.ProvisioningView` on the panel,
report a status line to systemd, and show what reading a stick did (in every
phase: a provisioned or revoked phone hears about a stick too).

A stick's file is read once per insertion: the same path, modification time
and size is the same insertion, so a file that was refused is logged once,
not at every look, and one that was applied is not applied again. A file
that goes away (the stick pulled) ends the insertion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from appliance.errors import ProvisioningError
from appliance.provisioning import usb, wifi
from appliance.provisioning.credential import (
    StoredCredential,
    forget_credential,
    load_credential,
    save_credential,
)
from appliance.provisioning.flow import (
    ApplyToken,
    FetchToken,
    Phase,
    PhoneFlow,
    Poll,
    ProvisioningView,
    RequestCode,
    SaveCredential,
)
from appliance.provisioning.trust import PIN_MISMATCH, client_context
from appliance.tasks import wait_event

__all__ = [
    "DEVICE_GRANT_TYPE",
    "DEVICE_ID_FILES",
    "PhoneProvisioning",
    "UsbSource",
    "device_id",
]

logger = logging.getLogger(__name__)

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
REQUEST_TIMEOUT_S = 10.0
_MAX_BODY = 64 * 1024


#: Where a phone's stable id comes from, in order: the Raspberry Pi's board
#: serial (device tree), a PC's DMI UUID, then /etc/machine-id. The board comes
#: first because the read-only image makes its machine id anew at each boot;
#: the same order names the host (image/rootfs/usr/local/sbin/appliance-hostname).
DEVICE_ID_FILES = (
    Path("/sys/firmware/devicetree/base/serial-number"),
    Path("/sys/class/dmi/id/product_uuid"),
    Path("/etc/machine-id"),
)


@dataclass(frozen=True)
class UsbSource:
    """Where USB provisioning files come from (:mod:`.usb`)."""

    directory: Path
    public_key_file: Path
    #: Where this phone's id is read, first readable non-empty one wins.
    device_id_files: tuple[Path, ...] = DEVICE_ID_FILES
    #: Where a file's Wi-Fi network block goes (:mod:`.wifi`); None = ignored.
    wifi_dir: Path | None = None


def device_id(paths: tuple[Path, ...] = DEVICE_ID_FILES) -> str:
    """This phone's id for USB files bound to one device ("" if unknown).

    Lower case, without the NUL that ends the device tree's serial-number or
    the newline of the others: an admin copies it by hand (``appliance
    provision status`` prints it) into ``make-usb --device-id``.
    """
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        found = raw.decode("ascii", "replace").strip("\x00 \t\r\n").lower()
        if found:
            return found
    return ""


async def read_stick(stick: UsbSource, provisioner_url: str | None) -> usb.UsbBundle:
    """Read the file on ``stick`` and verify it for this phone (the blocking
    steps in threads; ``provisioner_url`` as :func:`usb.verify_bundle` takes it).

    Raises:
        UsbFileError: unreadable, gone mid-read, or refused.
        ProvisioningError: no public key to check it with.
    """
    data = await asyncio.to_thread(usb.read_stick, stick.directory)
    if data is None:  # listed a moment ago: the stick went mid-read
        raise usb.UsbFileError("USB read error", "the file went away")
    this_phone = await asyncio.to_thread(device_id, stick.device_id_files)
    key = await asyncio.to_thread(usb.load_public_key, stick.public_key_file)
    return usb.verify_bundle(
        data,
        key,
        now=time.time(),
        device_id=this_phone,
        provisioner_url=provisioner_url,
    )


#: The codes of an unusable answer (:mod:`appliance.errors`).
UNREACHABLE = 31009
TIMED_OUT = 31003
MALFORMED = 31400
SERVER_ERROR = 20500
NOT_TRUSTED = 20151


class _BadAnswerError(ProvisioningError):
    """The provisioner's answer was unusable (network, status, JSON, TLS).

    ``short`` fits the OLED; ``code`` says which kind (31009 unreachable,
    31003 no answer in time, 20500 a server error, 31400 malformed, 20151 a
    certificate not trusted). ``str()`` reads ``error <code>: <message>``.
    """

    def __init__(
        self,
        message: str,
        short: str = "Provisioner unreachable",
        *,
        code: int = MALFORMED,
    ) -> None:
        super().__init__(message, code=code)
        self.short = short

    def __str__(self) -> str:
        return f"error {self.code}: {self.args[0]}"


class PhoneProvisioning:
    """Keeps the phone provisioned and its token fresh.

    Args:
        url: the provisioner's base URL.
        credential_file: where the device credential lives.
        ca_file: CA certificates (PEM) for an https provisioner, instead of
            the system's; the certificate is always verified, and a CA or
            pin stored with the credential comes first (:mod:`.trust`).
        stick: where sticks are mounted and the key their files are signed
            with; ``None`` = no USB provisioning.
        apply_token: gives a token to the Device (setup, then update_token).
        show: draws a provisioning view on the panel.
        status: one line for systemd's STATUS.
        usb_result: shows what reading a stick did for a few seconds: a
            message and the refusal's code (None for a success).
        flow: the state machine (tests pass one with fixed jitter).
    """

    def __init__(
        self,
        url: str,
        credential_file: Path,
        *,
        ca_file: Path | None = None,
        stick: UsbSource | None = None,
        apply_token: Callable[[str], Awaitable[None]],
        show: Callable[[ProvisioningView], None],
        status: Callable[[str], None],
        usb_result: Callable[[str, int | None], None] | None = None,
        flow: PhoneFlow | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.credential_file = credential_file
        self.ca_file = ca_file
        self.stick = stick
        #: The stick file handled last: (mtime_ns, size), or None.
        self._stick_file: tuple[int, int] | None = None
        self._apply = apply_token
        self._show = show
        self._status = status
        self._usb_result = usb_result or (lambda _message, _code: None)
        self.flow = flow or PhoneFlow()
        self._wake = asyncio.Event()
        self._credential: StoredCredential | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shown: ProvisioningView | None = None
        self._http: aiohttp.ClientSession | None = None
        self._trust: tuple[str, str] | None = None
        self.token_expires_at: float | None = None
        """Unix time the current token expires (``appliance provision status``)."""

    def token_will_expire(self) -> None:
        """The Device's token expires in 10 s: fetch a new one now."""
        self.flow.token_will_expire(self._now())
        self._wake.set()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    async def run(self) -> None:
        """Run until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            self._credential = await asyncio.to_thread(
                load_credential, self.credential_file
            )
        except ProvisioningError as exc:
            # Kept on disk untouched for a person to look at; provisioning
            # anew replaces it only after an approval.
            logger.error("ignoring the device credential: %s", exc)
        if self._credential is not None and self._credential.provisioner != self.url:
            logger.warning(
                "the credential is from %s, not %s; using it anyway",
                self._credential.provisioner,
                self.url,
            )
        self.flow.start(self._credential is not None, self._now())
        try:
            await self._loop_forever()
        finally:
            if self._http is not None:
                await self._http.close()

    async def _session(self) -> aiohttp.ClientSession:
        """The HTTP session, trusting what the current credential says."""
        stored = self._credential
        trust = (stored.ca_pem, stored.pin) if stored is not None else ("", "")
        if self._http is None or trust != self._trust:
            if self._http is not None:
                await self._http.close()
            self._http = await self._open_session(*trust)
            self._trust = trust
        return self._http

    async def _open_session(self, ca_pem: str, pin: str) -> aiohttp.ClientSession:
        context = await asyncio.to_thread(
            client_context, ca_file=self.ca_file, ca_pem=ca_pem, pin=pin
        )
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(ssl=context),
        )

    async def _loop_forever(self) -> None:
        while True:
            while actions := self.flow.actions_to_run():
                for action in actions:
                    try:
                        await self._perform(await self._session(), action)
                    except Exception:  # supervision boundary: retry later
                        logger.exception("provisioning step %r failed", action)
                        self.flow.request_failed(self._now())
                    self._publish()
            self._publish()
            deadline = self.flow.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - self._now())
            if self.stick is not None:
                wait = usb.POLL_S if wait is None else min(wait, usb.POLL_S)
            await wait_event(self._wake, wait)
            self._wake.clear()
            if self.stick is not None:
                await self._check_stick(self.stick)
            self.flow.tick(self._now())

    async def _check_stick(self, stick: UsbSource) -> None:
        """Apply a provisioning file found on a stick (once per insertion)."""
        try:
            found = await asyncio.to_thread(usb.stick_file, stick.directory)
        except usb.UsbFileError as exc:
            found = (-1, -1)  # unreadable: refused once, until it reads again
            if found != self._stick_file:
                self._stick_file = found
                self._usb_refused(exc.short, exc.code, str(exc))
            return
        if found is None or found == self._stick_file:
            self._stick_file = found
            return
        self._stick_file = found
        try:
            bundle = await read_stick(stick, self.url)
        except usb.UsbFileError as exc:
            self._usb_refused(exc.short, exc.code, str(exc))
            return
        except ProvisioningError as exc:
            logger.error("USB provisioning unavailable: %s", exc)
            return
        stored = StoredCredential(
            bundle.credential, bundle.identity, self.url, bundle.ca_pem, bundle.pin
        )
        if self._credential == stored:
            return  # this stick's credential is already in use
        if self._credential is not None:
            # Working credentials are replaced only by ones that work: one
            # token request with the file's credential and trust first.
            try:
                await self._try_credential(stored)
            except _BadAnswerError as exc:
                self._usb_refused(
                    exc.short, exc.code, f"kept the current credential: {exc}"
                )
                return
        try:
            if bundle.wifi is not None and stick.wifi_dir is not None:
                path = await asyncio.to_thread(
                    wifi.write_network, stick.wifi_dir, bundle.wifi
                )
                logger.info("Wi-Fi %r from USB written to %s", bundle.wifi.ssid, path)
            await asyncio.to_thread(save_credential, self.credential_file, stored)
        except ProvisioningError as exc:
            logger.error("%s", exc)
            self.flow.usb_message("Cannot save", self._now())
            self._usb_result("Cannot save", exc.code)
            return
        self._credential = stored
        logger.info("provisioned from USB as %s", bundle.identity)
        self._status(f"USB: provisioned as {bundle.identity}")
        self._usb_result(f"Provisioned as {bundle.identity}", None)
        self.flow.credential_installed(self._now())

    def _usb_refused(self, short: str, code: int, detail: str) -> None:
        logger.error("USB provisioning file refused (error %d): %s", code, detail)
        self.flow.usb_message(short, self._now())
        self._status(f"USB: {short}")
        self._usb_result(short, code)

    async def _try_credential(self, stored: StoredCredential) -> None:
        """One token request with ``stored`` and the trust it names.

        Raises:
            _BadAnswerError: no token (the message says why).
        """
        http = await self._open_session(stored.ca_pem, stored.pin)
        try:
            headers = {"Authorization": f"Bearer {stored.credential}"}
            status, body = await self._post(http, "/api/token", headers=headers)
        finally:
            await http.close()
        if status != 200:
            code = body.get("code")
            raise _BadAnswerError(
                f"HTTP {status} {body.get('error')}",
                "USB credential refused",
                code=code if type(code) is int else 20003,
            )

    async def reset(self) -> bool:
        """Forget the credential (``appliance provision reset``), start over.

        Returns whether there was one. The token in use is forgotten too;
        the Device keeps its registration until that token expires.

        Raises:
            ProvisioningError: the file could not be removed.
        """
        had = await asyncio.to_thread(forget_credential, self.credential_file)
        # A stick still inserted is not applied again: reset means forget.
        self._credential = None
        self.token_expires_at = None
        logger.warning("provisioning reset: the device credential was removed")
        self.flow.reset(self._now())
        self._wake.set()
        return had

    def status(self) -> dict[str, object]:
        """What ``appliance provision status`` shows (never a secret)."""
        stored = self._credential
        return {
            "phase": str(self.flow.phase),
            "provisioner": self.url,
            "identity": stored.identity if stored is not None else "",
            "phone": stored.credential.partition(".")[0] if stored else "",
            "pinned": bool(stored and stored.pin),
            "token_expires_at": self.token_expires_at,
            "message": self.flow.view().message,
        }

    def _publish(self) -> None:
        view = self.flow.view()
        if view != self._shown:
            self._shown = view
            self._show(view)
            if self.flow.waiting_for_provisioning:
                self._status("waiting for provisioning")
            elif view.active:
                self._status(view.message)

    # --- actions ---------------------------------------------------------------------

    async def _perform(self, http: aiohttp.ClientSession, action: object) -> None:
        flow = self.flow
        if isinstance(action, RequestCode):
            await self._request_code(http)
        elif isinstance(action, Poll):
            await self._poll(http, action.device_code)
        elif isinstance(action, SaveCredential):
            stored = StoredCredential(action.credential, action.identity, self.url)
            try:
                await asyncio.to_thread(save_credential, self.credential_file, stored)
            except ProvisioningError as exc:
                logger.error("%s", exc)
                flow.save_failed(self._now())
                return
            self._credential = stored
            logger.info("provisioned as %s", action.identity)
            flow.credential_saved(self._now())
        elif isinstance(action, FetchToken):
            await self._fetch_token(http)
        elif isinstance(action, ApplyToken):
            await self._apply(action.token)

    async def _post(
        self,
        http: aiohttp.ClientSession,
        path: str,
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        try:
            async with http.post(
                self.url + path, data=data or {}, headers=headers
            ) as response:
                body = await response.content.read(_MAX_BODY + 1)
                status = response.status
        except aiohttp.ClientConnectorCertificateError as exc:
            why = exc.certificate_error
            pinned = getattr(why, "code", "") == PIN_MISMATCH
            raise _BadAnswerError(
                f"the provisioner's TLS certificate is not trusted: {why}",
                "TLS pin mismatch" if pinned else "TLS certificate not trusted",
                code=NOT_TRUSTED,
            ) from exc
        except TimeoutError as exc:  # before ClientError: ServerTimeoutError is both
            raise _BadAnswerError(
                f"provisioner unreachable: no answer within {REQUEST_TIMEOUT_S:g} s",
                code=TIMED_OUT,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _BadAnswerError(
                f"provisioner unreachable: {str(exc) or type(exc).__name__}",
                code=UNREACHABLE,
            ) from exc
        if status >= 500:
            raise _BadAnswerError(
                f"HTTP {status} from the provisioner",
                "Provisioner error",
                code=SERVER_ERROR,
            )
        if len(body) > _MAX_BODY:
            raise _BadAnswerError(f"HTTP {status}: answer over {_MAX_BODY} bytes")
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise _BadAnswerError(f"HTTP {status} without JSON") from exc
        if not isinstance(parsed, dict):
            raise _BadAnswerError(f"HTTP {status}: not a JSON object")
        return status, parsed

    async def _request_code(self, http: aiohttp.ClientSession) -> None:
        try:
            status, body = await self._post(
                http,
                "/api/device/authorize",
                data={"client_info": socket.gethostname()},
            )
            if status != 200:
                raise _BadAnswerError(f"HTTP {status} {body.get('error')}")
            device_code = _text(body, "device_code", 512)
            user_code = _text(body, "user_code", 32)
            uri = _text(body, "verification_uri_complete", 512)
            if not uri.startswith(("http://", "https://")):
                raise _BadAnswerError("verification_uri_complete is not a web address")
            expires_in = _number(body, "expires_in")
            interval = _number(body, "interval") if "interval" in body else 5.0
        except _BadAnswerError as exc:
            logger.warning("no device code: %s", exc)
            self.flow.request_failed(self._now(), exc.short)
            return
        logger.info("enroll this phone: code %s at %s", user_code, uri)
        self.flow.code_received(
            device_code, user_code, uri, expires_in, interval, self._now()
        )

    async def _poll(self, http: aiohttp.ClientSession, device_code: str) -> None:
        try:
            status, body = await self._post(
                http,
                "/api/device/token",
                data={"grant_type": DEVICE_GRANT_TYPE, "device_code": device_code},
            )
            if status == 200:
                credential = _text(body, "access_token", 512)
                identity = _text(body, "identity", 121)
                self.flow.poll_answered(None, credential, identity, self._now())
                return
            if status == 400 and isinstance(body.get("error"), str):
                self.flow.poll_answered(body["error"], "", "", self._now())
                return
            raise _BadAnswerError(f"HTTP {status}")
        except _BadAnswerError as exc:
            logger.warning("poll failed: %s", exc)
            self.flow.request_failed(self._now(), exc.short)

    async def _fetch_token(self, http: aiohttp.ClientSession) -> None:
        assert self._credential is not None
        headers = {"Authorization": f"Bearer {self._credential.credential}"}
        try:
            status, body = await self._post(http, "/api/token", headers=headers)
            if status in (401, 403) and body.get("error") in (
                "phone_revoked",
                "invalid_client",
            ):
                logger.error(
                    "the provisioner refused this phone: %s (%s)",
                    body.get("error_description"),
                    body.get("code"),
                )
                self.flow.token_refused(str(body["error"]), self._now())
                return
            if status != 200:
                raise _BadAnswerError(f"HTTP {status} {body.get('error')}")
            token = _text(body, "token", 8192)
            identity = _text(body, "identity", 121)
            ttl = _number(body, "ttl")
        except _BadAnswerError as exc:
            logger.warning("no token: %s", exc)
            self.flow.request_failed(self._now(), exc.short)
            return
        logger.info("new token for %s, valid %d s", identity, ttl)
        self.token_expires_at = time.time() + ttl
        self.flow.token_received(token, identity, ttl, self._now())

    @property
    def phase(self) -> Phase:
        """Where the flow is (for tests and the status line)."""
        return self.flow.phase


def _text(body: dict[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _BadAnswerError(f"bad or missing {key}")
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _BadAnswerError(f"bad or missing {key}")
    return float(min(value, 86400))
