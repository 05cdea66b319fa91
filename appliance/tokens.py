"""Twilio Access Tokens and legacy Capability Tokens: create and verify (pure).

Both token kinds are HS256 JWTs (signaling-protocol.md §6):

* **Access Token** (§6.1): header ``cty = "twilio-fpa;v=1"``, ``iss`` = API key
  SID (``SK…``), ``sub`` = Account SID (``AC…``), signed with the API key secret,
  grants ``{"identity", "voice": {"incoming": {"allow"}, "outgoing":
  {"application_sid", "params"}}}``.
* **Capability Token** (§6.2, deprecated): no ``cty``, ``iss`` = Account SID,
  signed with the account Auth Token, grants encoded as space-separated
  ``scope:client:incoming?clientName=…`` / ``scope:client:outgoing?appSid=…``
  URIs in ``scope``.

:func:`verify_token` applies the checks in this order, so that the result does
not depend on which secret the caller happens to hold:

1. structure (not a JWT, wrong ``alg``/``cty``, missing ``iss``/``sub``/``exp``/
   grants/identity, an ``exp``/``nbf``/``iat`` that is not a finite number in
   [0, year 9999]) → 31204;
2. unknown issuer (API key or, for capability tokens, account) or bad
   signature → 31202;
3. ``sub`` is not the account owning the API key → 31203;
4. ``exp`` more than 24 h (+ ``CLOCK_SKEW_S``) after ``now``, or lifetime
   ``exp - (nbf or iat)`` longer than 24 h → 31207 (Twilio errors 20104/20157:
   maximum 24 h). Both, because ``nbf``/``iat`` are chosen by the minter: a
   future ``iat`` alone must not stretch how long a token stays usable;
5. ``exp <= now`` → 31205;
6. ``nbf`` or ``iat`` later than ``now + CLOCK_SKEW_S`` → 31204 (not valid
   yet / issued in the future). We allow 60 s of skew because the
   phone's clock (NTP on a Pi without RTC) and the token minter's clock are
   never exactly equal; Twilio documents no value.

Capability tokens: the identity is the ``clientName`` of the incoming scope (or
of the outgoing scope). An outgoing-only capability token without
``clientName`` is valid and gets the identity ``"Anonymous"`` (Twilio showed such
callers as ``client:Anonymous``). A capability token without any ``client``
scope is invalid (31204).

Every ``now`` is Unix time in seconds, because ``exp`` and ``nbf`` are absolute.
Nothing here logs or stores a token.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from appliance.errors import AuthenticationError

__all__ = [
    "ACCESS_TOKEN_CTY",
    "CLOCK_SKEW_S",
    "MAX_LIFETIME_S",
    "InvalidTokenError",
    "Keyring",
    "TokenClaims",
    "create_access_token",
    "create_capability_token",
    "describe_unverified",
    "verify_token",
]

ACCESS_TOKEN_CTY = "twilio-fpa;v=1"
#: Longest lifetime Twilio accepts (https://www.twilio.com/docs/api/errors/20104).
MAX_LIFETIME_S = 86400
#: Tolerated difference between our clock and the token minter's (``nbf``).
CLOCK_SKEW_S = 60.0
#: Latest NumericDate we accept (9999-12-31T23:59:59Z). Anything larger is
#: nonsense, and huge JSON integers would overflow ``float()``.
_MAX_TIMESTAMP = 253_402_300_799
_ALGORITHM = "HS256"
#: The one algorithm the gateway accepts, as PyJWT implements it.
_HS256 = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
_ANONYMOUS = "Anonymous"

_MESSAGES = {
    31202: "JWT signature validation failed",
    31203: "No valid account",
    31204: "JWT is invalid",
    31205: "JWT token expired",
    31207: "JWT token expiration too long",
}


class InvalidTokenError(AuthenticationError):
    """A token was rejected; ``code``/``message`` are what the gateway sends.

    Attributes:
        detail: why, for logs (never contains the token or a secret).
    """

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, _MESSAGES[code])
        self.detail = detail


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants.

    Attributes:
        identity: the client name the token speaks for.
        account_sid: the account (``AC…``).
        incoming_allowed: may register for incoming calls.
        outgoing_application_sid: the TwiML app SID, when outgoing calls are
            allowed (``None`` = no outgoing grant).
        outgoing_params: the grant's outgoing params (may be empty).
        expires_at: ``exp``, Unix seconds.
        kind: ``"access"`` or ``"capability"``.
    """

    identity: str
    account_sid: str
    incoming_allowed: bool
    outgoing_application_sid: str | None
    outgoing_params: dict[str, str]
    expires_at: float
    kind: Literal["access", "capability"]


@dataclass
class Keyring:
    """The secrets a gateway verifies tokens with.

    Attributes:
        api_keys: account SID → {API key SID → API key secret}.
        auth_tokens: account SID → account Auth Token.

    The repr shows SIDs only, never secrets.
    """

    api_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    auth_tokens: dict[str, str] = field(default_factory=dict)

    def add_api_key(self, account_sid: str, key_sid: str, secret: str) -> None:
        """Register an API key of an account."""
        self.api_keys.setdefault(account_sid, {})[key_sid] = secret

    def add_auth_token(self, account_sid: str, auth_token: str) -> None:
        """Register the Auth Token of an account."""
        self.auth_tokens[account_sid] = auth_token

    def find_api_key(self, key_sid: str) -> tuple[str, str] | None:
        """Return ``(account_sid, secret)`` for an API key SID, if known."""
        for account_sid, keys in self.api_keys.items():
            if key_sid in keys:
                return account_sid, keys[key_sid]
        return None

    @property
    def account_sids(self) -> set[str]:
        """Every account that has an API key or an Auth Token."""
        return set(self.api_keys) | set(self.auth_tokens)

    def __repr__(self) -> str:
        keys = {account: sorted(keys) for account, keys in self.api_keys.items()}
        return f"Keyring(api_keys={keys!r}, auth_tokens={sorted(self.auth_tokens)!r})"


def _jws() -> jwt.PyJWS:
    return jwt.PyJWS()


def _sign(claims: dict[str, Any], secret: str, headers: dict[str, Any]) -> str:
    body = json.dumps(claims, separators=(",", ":")).encode()
    # Twilio's secrets are 32 characters; shorter test secrets would make PyJWT
    # warn on every call, which says nothing about our code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return _jws().encode(body, secret, algorithm=_ALGORITHM, headers=headers)


def create_access_token(
    *,
    account_sid: str,
    api_key_sid: str,
    api_secret: str,
    identity: str,
    ttl: int = 3600,
    now: float,
    outgoing_application_sid: str | None = None,
    outgoing_params: Mapping[str, Any] | None = None,
    incoming_allow: bool = True,
    region: str | None = None,
) -> str:
    """Mint an Access Token with a Voice grant, in Twilio's exact format (§6.1).

    Args:
        account_sid: ``AC…``, becomes ``sub``.
        api_key_sid: ``SK…``, becomes ``iss`` and prefixes ``jti``.
        api_secret: the API key secret the token is signed with.
        identity: the client name.
        ttl: lifetime in seconds (``exp = now + ttl``).
        now: Unix time in seconds (``iat``, ``nbf``).
        outgoing_application_sid: ``AP…``; grants outgoing calls when set.
        outgoing_params: params of the outgoing grant.
        incoming_allow: grant incoming calls.
        region: home region, emitted as the ``twr`` header.

    Returns:
        The signed JWT.
    """
    issued = int(now)
    voice: dict[str, Any] = {}
    if incoming_allow:
        voice["incoming"] = {"allow": True}
    if outgoing_application_sid is not None:
        outgoing: dict[str, Any] = {"application_sid": outgoing_application_sid}
        if outgoing_params:
            outgoing["params"] = dict(outgoing_params)
        voice["outgoing"] = outgoing
    claims = {
        "jti": f"{api_key_sid}-{issued}",
        "iss": api_key_sid,
        "sub": account_sid,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
        "grants": {"identity": identity, "voice": voice},
    }
    headers: dict[str, Any] = {"typ": "JWT", "cty": ACCESS_TOKEN_CTY}
    if region is not None:
        headers["twr"] = region
    return _sign(claims, api_secret, headers)


def _scope(service: str, privilege: str, params: Mapping[str, str]) -> str:
    uri = f"scope:{service}:{privilege}"
    if params:
        uri += "?" + urlencode(sorted(params.items()))
    return uri


def create_capability_token(
    *,
    account_sid: str,
    auth_token: str,
    client_name: str,
    ttl: int = 3600,
    now: float,
    incoming: bool = True,
    outgoing_application_sid: str | None = None,
    outgoing_params: Mapping[str, Any] | None = None,
) -> str:
    """Mint a legacy Capability Token (§6.2).

    Scope params are sorted and url-encoded; ``appParams`` is itself the
    url-encoded outgoing params, and the outgoing scope names the client when
    incoming is granted too, as Twilio's helper library does.

    Args:
        account_sid: ``AC…``, becomes ``iss``.
        auth_token: the account Auth Token the token is signed with.
        client_name: the identity.
        ttl: lifetime in seconds.
        now: Unix time in seconds.
        incoming: grant ``scope:client:incoming``.
        outgoing_application_sid: ``AP…``; grants ``scope:client:outgoing``.
        outgoing_params: the ``appParams`` of the outgoing scope.

    Returns:
        The signed JWT.
    """
    issued = int(now)
    scopes: list[str] = []
    if outgoing_application_sid is not None:
        params = {"appSid": outgoing_application_sid}
        if outgoing_params:
            params["appParams"] = urlencode(
                sorted((str(k), str(v)) for k, v in outgoing_params.items())
            )
        if incoming:
            params["clientName"] = client_name
        scopes.append(_scope("client", "outgoing", params))
    if incoming:
        scopes.append(_scope("client", "incoming", {"clientName": client_name}))
    claims = {
        "scope": " ".join(scopes),
        "iss": account_sid,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    return _sign(claims, auth_token, {"typ": "JWT"})


@dataclass(frozen=True)
class _Parsed:
    """A JWT split and decoded once; the signature not yet checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: str) -> _Parsed:
    """Decode ``token`` without checking the signature.

    PyJWT validates each base64url segment character by character in Python,
    which made decoding most of an exchange's per-registration CPU; the token
    is therefore decoded once here and the signature checked over the same
    bytes (:func:`_check_signature`), not by a second full decode.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidTokenError(31204, "not a JWT")
    try:
        complete = _jws().decode_complete(token, options={"verify_signature": False})
        claims = json.loads(complete["payload"])
    except (jwt.InvalidTokenError, ValueError, RecursionError) as exc:
        # RecursionError: deeply nested JSON in the header (parsed by PyJWT) or
        # the claims is a malformed token, not a crash.
        raise InvalidTokenError(31204, f"not a JWT ({type(exc).__name__})") from exc
    header = complete["header"]
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidTokenError(31204, "header or claims are not JSON objects")
    return _Parsed(
        header=header,
        claims=claims,
        signing_input=token.rsplit(".", 1)[0].encode("ascii"),
        signature=complete["signature"],
    )


def describe_unverified(token: str) -> dict[str, Any]:
    """Read a token's header and claims **without** verifying it (diagnostics).

    Returns:
        ``{"kind", "header", "claims"}``; ``kind`` is ``"access"`` or
        ``"capability"`` by the ``cty`` header. The signature is not included.

    Raises:
        InvalidTokenError: 31204 when the text is not a JWT.
    """
    parsed = _parse(token)
    kind = "access" if "cty" in parsed.header else "capability"
    return {"kind": kind, "header": parsed.header, "claims": parsed.claims}


def _is_timestamp(value: object) -> bool:
    """A JWT NumericDate we can compute with (RFC 7519 §2).

    ``json`` parses ``NaN``/``Infinity`` and unbounded integers: NaN compares
    false with everything (it would switch the time checks off) and a huge
    integer overflows ``float()``, so both are malformed here.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return 0 <= value <= _MAX_TIMESTAMP  # int vs int: no float() overflow


def _check_time_claims(claims: dict[str, Any]) -> None:
    """Structure of ``exp``/``nbf``/``iat`` (step 1: 31204 before signatures)."""
    if not _is_timestamp(claims.get("exp")):
        raise InvalidTokenError(31204, "exp missing or not a valid time")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and not _is_timestamp(value):
            raise InvalidTokenError(31204, f"{name} is not a valid time")


def _check_signature(parsed: _Parsed, secret: str) -> None:
    """HS256 over the bytes :func:`_parse` split off (RFC 7515 §5.2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        key = _HS256.prepare_key(secret)
    if not _HS256.verify(parsed.signing_input, key, parsed.signature):
        raise InvalidTokenError(31202, "signature mismatch")


def _check_times(claims: dict[str, Any], now: float) -> None:
    # _check_time_claims has made these finite, in range, or None.
    exp = float(claims["exp"])
    nbf = claims.get("nbf")
    iat = claims.get("iat")
    # Twilio's limit is on exp itself ("at most 24 h in the future", 20104);
    # checking only exp - (nbf or iat) let a future iat stretch it.
    if exp - now > MAX_LIFETIME_S + CLOCK_SKEW_S:
        raise InvalidTokenError(31207, f"exp is {exp - now:.0f} s away > 24 h")
    start = nbf if nbf is not None else iat
    if start is not None and exp - float(start) > MAX_LIFETIME_S:
        raise InvalidTokenError(31207, f"lifetime {exp - float(start):.0f} s > 24 h")
    if exp <= now:
        raise InvalidTokenError(31205, "exp is in the past")
    if nbf is not None and float(nbf) > now + CLOCK_SKEW_S:
        raise InvalidTokenError(31204, "nbf is in the future")
    if iat is not None and float(iat) > now + CLOCK_SKEW_S:
        raise InvalidTokenError(31204, "iat is in the future")


def _verify_access(parsed: _Parsed, keyring: Keyring) -> TokenClaims:
    claims = parsed.claims
    iss, sub, grants = claims.get("iss"), claims.get("sub"), claims.get("grants")
    if not isinstance(iss, str) or not iss:
        raise InvalidTokenError(31204, "missing iss")
    if not isinstance(sub, str) or not sub:
        raise InvalidTokenError(31204, "missing sub")
    _check_time_claims(claims)
    if not isinstance(grants, dict):
        raise InvalidTokenError(31204, "missing grants")
    identity = grants.get("identity")
    if not isinstance(identity, str) or not identity:
        raise InvalidTokenError(31204, "missing identity")
    voice = grants.get("voice", {})
    if not isinstance(voice, dict):
        raise InvalidTokenError(31204, "voice grant is not an object")
    found = keyring.find_api_key(iss)
    if found is None:
        raise InvalidTokenError(31202, f"unknown API key {iss}")
    account_sid, secret = found
    _check_signature(parsed, secret)
    if sub != account_sid:
        raise InvalidTokenError(31203, f"sub {sub} does not own API key {iss}")
    incoming = voice.get("incoming")
    incoming_allowed = isinstance(incoming, dict) and incoming.get("allow") is True
    outgoing = voice.get("outgoing")
    app_sid: str | None = None
    params: dict[str, str] = {}
    if isinstance(outgoing, dict) and isinstance(outgoing.get("application_sid"), str):
        app_sid = outgoing["application_sid"]
        raw = outgoing.get("params")
        if isinstance(raw, dict):
            params = {str(k): str(v) for k, v in raw.items()}
    return TokenClaims(
        identity=identity,
        account_sid=account_sid,
        incoming_allowed=incoming_allowed,
        outgoing_application_sid=app_sid,
        outgoing_params=params,
        expires_at=float(claims["exp"]),
        kind="access",
    )


def _parse_scopes(scope: str) -> dict[str, dict[str, str]]:
    """Map ``"client:incoming"`` etc. to their decoded query params."""
    result: dict[str, dict[str, str]] = {}
    for uri in scope.split():
        head, _, query = uri.partition("?")
        parts = head.split(":")
        if len(parts) != 3 or parts[0] != "scope":
            raise InvalidTokenError(31204, "malformed scope")
        result[f"{parts[1]}:{parts[2]}"] = dict(parse_qsl(query))
    return result


def _verify_capability(parsed: _Parsed, keyring: Keyring) -> TokenClaims:
    claims = parsed.claims
    iss, scope = claims.get("iss"), claims.get("scope")
    if not isinstance(iss, str) or not iss:
        raise InvalidTokenError(31204, "missing iss")
    _check_time_claims(claims)
    if not isinstance(scope, str):
        raise InvalidTokenError(31204, "missing scope")
    scopes = _parse_scopes(scope)
    incoming = scopes.get("client:incoming")
    outgoing = scopes.get("client:outgoing")
    if incoming is None and outgoing is None:
        raise InvalidTokenError(31204, "no client scope")
    if incoming is not None and not incoming.get("clientName"):
        raise InvalidTokenError(31204, "incoming scope without clientName")
    if outgoing is not None and not outgoing.get("appSid"):
        raise InvalidTokenError(31204, "outgoing scope without appSid")
    auth_token = keyring.auth_tokens.get(iss)
    if auth_token is None:
        raise InvalidTokenError(31202, f"unknown account {iss}")
    _check_signature(parsed, auth_token)
    identity = (incoming or {}).get("clientName") or (outgoing or {}).get("clientName")
    params: dict[str, str] = {}
    if outgoing is not None and outgoing.get("appParams"):
        params = dict(parse_qsl(outgoing["appParams"]))
    return TokenClaims(
        identity=identity or _ANONYMOUS,
        account_sid=iss,
        incoming_allowed=incoming is not None,
        outgoing_application_sid=outgoing["appSid"] if outgoing is not None else None,
        outgoing_params=params,
        expires_at=float(claims["exp"]),
        kind="capability",
    )


def verify_token(token: str, keyring: Keyring, now: float) -> TokenClaims:
    """Verify an Access Token or Capability Token as the gateway does.

    The order of the checks and the codes are in the module docstring.

    Args:
        token: the JWT from ``listen.payload.token``.
        keyring: the secrets of the accounts we serve.
        now: Unix time in seconds.

    Returns:
        What the token grants.

    Raises:
        InvalidTokenError: an :class:`~appliance.errors.AuthenticationError`
            with code 31202, 31203, 31204, 31205 or 31207.
    """
    parsed = _parse(token)
    header = parsed.header
    if header.get("alg") != _ALGORITHM:
        raise InvalidTokenError(31204, f"alg must be {_ALGORITHM}")
    if "cty" in header:
        if header["cty"] != ACCESS_TOKEN_CTY:
            raise InvalidTokenError(31204, "unknown cty")
        result = _verify_access(parsed, keyring)
    else:
        result = _verify_capability(parsed, keyring)
    _check_times(parsed.claims, now)
    return result
