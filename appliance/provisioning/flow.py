"""The phone's side of provisioning and of its token lifecycle (pure).

Theory of operation. A phone without a device credential runs the device
authorization grant (RFC 8628) as its client: it asks for a device code
(§3.1), shows the user code and a QR code of ``verification_uri_complete``
(§3.3.1), and polls the token endpoint (§3.4) every ``interval`` seconds.
The answers (§3.5): ``authorization_pending`` polls on; ``slow_down`` adds 5
seconds to the interval for good; ``expired_token``, ``access_denied`` and
``invalid_grant`` start over with a new code; a connection failure doubles
the interval ("clients MUST unilaterally reduce their polling frequency",
§3.5). On approval the credential is saved (the adapter writes the file and
then calls :meth:`PhoneFlow.credential_saved`), and the phone fetches its
first Access Token.

With a credential, the phone fetches a token at start and again whenever the
Device says the token will expire (10 s before). While the provisioner is
unreachable it retries with jittered exponential backoff (1 s doubling to
60 s, each delay drawn from [d/2, d]) so a room of phones back from a power
cut does not retry in step; the current token stays in use meanwhile, and a
call in progress is never touched (``update_token`` happens on the live
connection). When the token has expired unrefreshed the screen says
"offline: token expired" and the retries go on. A revoked phone (403
``phone_revoked``) or an unknown credential (401) stops asking often: the
screen says so and one retry every :data:`REJECTED_RETRY_S` seconds notices
if the provisioner's database comes back. The credential file is never
deleted by this module: losing the working credential on a server fault is
worse than showing a message.

Inputs are results the adapter observed (``code_received``,
``poll_answered``, ``token_received``, ``request_failed`` ...) and time
(``tick(now)``, monotonic seconds). Outputs are actions for the adapter
(:meth:`PhoneFlow.actions_to_run`), what the screen should show
(:meth:`PhoneFlow.view`) and :meth:`PhoneFlow.next_deadline`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "REJECTED_RETRY_S",
    "ApplyToken",
    "FetchToken",
    "Phase",
    "PhoneFlow",
    "Poll",
    "ProvisioningView",
    "RequestCode",
    "SaveCredential",
]

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
REJECTED_RETRY_S = 300.0
#: RFC 8628 §3.5: slow_down adds 5 seconds to the interval.
SLOW_DOWN_STEP_S = 5.0
#: Longest poll interval we accept from a server or reach by doubling.
MAX_INTERVAL_S = 120.0


class Phase(StrEnum):
    """Where the phone is in provisioning."""

    STARTING = "starting"
    REQUESTING_CODE = "requesting_code"
    WAITING_APPROVAL = "waiting_approval"
    SAVING = "saving"
    FETCHING_TOKEN = "fetching_token"
    READY = "ready"
    REJECTED = "rejected"


@dataclass(frozen=True)
class RequestCode:
    """POST the device authorization request (§3.1)."""


@dataclass(frozen=True)
class Poll:
    """POST the device access token request (§3.4)."""

    device_code: str


@dataclass(frozen=True)
class SaveCredential:
    """Write the credential atomically, then call ``credential_saved``."""

    credential: str
    identity: str


@dataclass(frozen=True)
class FetchToken:
    """Ask the provisioner for an Access Token with the credential."""


@dataclass(frozen=True)
class ApplyToken:
    """Give the Device this token (``setup`` the first time, else ``update_token``)."""

    token: str
    identity: str


Action = RequestCode | Poll | SaveCredential | FetchToken | ApplyToken


@dataclass(frozen=True)
class ProvisioningView:
    """What the screen shows; ``active`` False = provisioning has nothing to say."""

    active: bool
    user_code: str = ""
    uri: str = ""
    message: str = ""


class PhoneFlow:
    """The phone's provisioning and token-refresh state machine.

    Args:
        jitter: a number in [0, 1) per call (``random.random`` by default).
    """

    def __init__(self, jitter: Callable[[], float] = random.random) -> None:
        self._jitter = jitter
        self.phase = Phase.STARTING
        self._actions: list[Action] = []
        self._deadline: float | None = None
        self._failures = 0
        self._device_code = ""
        self._user_code = ""
        self._uri = ""
        self._interval = 5.0
        self._code_expires_at = 0.0
        self._token_expires_at: float | None = None
        self._has_token = False
        self._message = ""

    # --- outputs -----------------------------------------------------------------

    def actions_to_run(self) -> list[Action]:
        """Return and clear the actions the inputs produced."""
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called."""
        times = [self._deadline, self._token_expires_at if self._has_token else None]
        return min((t for t in times if t is not None), default=None)

    def view(self) -> ProvisioningView:
        """The provisioning screen's content."""
        if self.phase is Phase.WAITING_APPROVAL:
            return ProvisioningView(True, self._user_code, self._uri, self._message)
        if self.phase in (Phase.REQUESTING_CODE, Phase.SAVING) or (
            self.phase is Phase.REJECTED
        ):
            return ProvisioningView(True, message=self._message)
        if self._message and not self._has_token:
            return ProvisioningView(True, message=self._message)
        return ProvisioningView(False)

    @property
    def waiting_for_provisioning(self) -> bool:
        """No identity yet: the phone waits for someone to approve it."""
        return self.phase in (
            Phase.REQUESTING_CODE,
            Phase.WAITING_APPROVAL,
            Phase.SAVING,
        )

    # --- inputs --------------------------------------------------------------------

    def start(self, has_credential: bool, now: float) -> None:
        """Begin: fetch a token with the saved credential, or ask for a code."""
        if has_credential:
            self._fetch_token("")
        else:
            self._request_code("Waiting for provisioning")

    def code_received(
        self,
        device_code: str,
        user_code: str,
        uri_complete: str,
        expires_in: float,
        interval: float,
        now: float,
    ) -> None:
        """The provisioner answered the authorization request (§3.2)."""
        self._failures = 0
        self.phase = Phase.WAITING_APPROVAL
        self._device_code = device_code
        self._user_code = user_code
        self._uri = uri_complete
        self._message = ""
        # §3.2: interval defaults to 5 s; never poll faster than 1 s.
        self._interval = min(max(interval, 1.0), MAX_INTERVAL_S)
        self._code_expires_at = now + expires_in
        self._deadline = now + self._interval

    def poll_answered(
        self, error: str | None, credential: str, identity: str, now: float
    ) -> None:
        """The token endpoint answered a poll: an ``error`` (§3.5), or the
        credential and identity."""
        if self.phase is not Phase.WAITING_APPROVAL:
            return
        self._failures = 0
        if error is None:
            self.phase = Phase.SAVING
            self._deadline = None
            self._message = f"Approved as {identity}"
            self._actions.append(SaveCredential(credential, identity))
        elif error == "authorization_pending":
            self._deadline = now + self._interval
        elif error == "slow_down":
            self._interval = min(self._interval + SLOW_DOWN_STEP_S, MAX_INTERVAL_S)
            self._deadline = now + self._interval
        elif error == "access_denied":
            self._request_code("Denied; new code")
        elif error == "expired_token":
            self._request_code("Code expired; new code")
        else:  # invalid_grant, or anything the RFC does not list: start over
            self._request_code("New code")

    def credential_saved(self, now: float) -> None:
        """The credential file is on disk: fetch the first token."""
        if self.phase is Phase.SAVING:
            self._fetch_token("")

    def token_received(
        self, token: str, identity: str, ttl_s: float, now: float
    ) -> None:
        """The provisioner sent an Access Token valid for ``ttl_s`` seconds."""
        self._failures = 0
        self.phase = Phase.READY
        self._deadline = None
        self._message = ""
        self._has_token = True
        self._token_expires_at = now + ttl_s
        self._actions.append(ApplyToken(token, identity))

    def token_refused(self, error: str, now: float) -> None:
        """The provisioner refused the credential: ``phone_revoked`` (403) or
        ``invalid_client`` (401)."""
        self.phase = Phase.REJECTED
        self._message = (
            "Phone revoked by the administrator"
            if error == "phone_revoked"
            else "Credential rejected by the provisioner"
        )
        self._deadline = now + REJECTED_RETRY_S

    def token_will_expire(self, now: float) -> None:
        """The Device's ``token_will_expire``: get a new one now."""
        if self.phase is Phase.READY:
            self._fetch_token("")

    def request_failed(
        self, now: float, reason: str = "Provisioner unreachable"
    ) -> None:
        """A request got no usable answer (network down, 5xx, bad JSON, a
        certificate not trusted); ``reason`` is shown while there is no token."""
        self._failures += 1
        if self.phase is Phase.WAITING_APPROVAL:
            # §3.5: reduce the polling frequency on connection failures.
            self._interval = min(self._interval * 2, MAX_INTERVAL_S)
            self._deadline = now + self._interval
            return
        if self.phase in (Phase.REQUESTING_CODE, Phase.FETCHING_TOKEN):
            self._deadline = now + self._backoff()
            if self.phase is Phase.REQUESTING_CODE or not (
                self._has_token or self._message
            ):
                self._message = reason

    def credential_installed(self, now: float) -> None:
        """A new credential was saved from a USB stick: use it from now on."""
        self._failures = 0
        self._fetch_token("")

    def usb_message(self, message: str, now: float) -> None:
        """Show what a USB stick did (shown while waiting for provisioning)."""
        if self.waiting_for_provisioning:
            self._message = message

    def reset(self, now: float) -> None:
        """The credential was forgotten (``provision reset``): enroll anew."""
        self._failures = 0
        self._has_token = False
        self._token_expires_at = None
        self._request_code("Provisioning reset")

    def save_failed(self, now: float) -> None:
        """The credential could not be written: try again with a new code."""
        self._request_code("Cannot save; new code")

    def tick(self, now: float) -> None:
        """Advance time: poll, retry, notice expiry."""
        if (
            self._has_token
            and self._token_expires_at is not None
            and now >= self._token_expires_at
        ):
            self._has_token = False
            self._message = "offline: token expired"
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self.phase is Phase.WAITING_APPROVAL:
            if now >= self._code_expires_at:
                self._request_code("Code expired; new code")
            else:
                self._actions.append(Poll(self._device_code))
        elif self.phase is Phase.REQUESTING_CODE:
            self._actions.append(RequestCode())
        elif self.phase in (Phase.FETCHING_TOKEN, Phase.REJECTED):
            self._fetch_token(self._message)

    # --- helpers -------------------------------------------------------------------

    def _request_code(self, message: str) -> None:
        self.phase = Phase.REQUESTING_CODE
        self._message = message
        self._deadline = None
        self._user_code = self._uri = self._device_code = ""
        self._actions.append(RequestCode())

    def _fetch_token(self, message: str) -> None:
        self.phase = Phase.FETCHING_TOKEN
        self._message = message if not self._has_token else ""
        self._deadline = None
        self._actions.append(FetchToken())

    def _backoff(self) -> float:
        exponent = max(self._failures - 1, 0)
        delay: float = min(BACKOFF_MIN_S * 2.0**exponent, BACKOFF_MAX_S)
        return delay / 2 + delay / 2 * self._jitter()
