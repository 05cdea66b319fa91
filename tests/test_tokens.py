"""Access Tokens and Capability Tokens: format, round trips, every rejection code."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from appliance.errors import AuthenticationError
from appliance.tokens import (
    Keyring,
    create_access_token,
    create_capability_token,
    describe_unverified,
    verify_token,
)

ACCOUNT = "AC" + "a" * 32
OTHER_ACCOUNT = "AC" + "c" * 32
KEY = "SK" + "b" * 32
OTHER_KEY = "SK" + "d" * 32
SECRET = "s" * 32
AUTH_TOKEN = "t" * 32
APP = "AP" + "e" * 32
NOW = 1_700_000_000.0


@pytest.fixture
def keyring() -> Keyring:
    ring = Keyring()
    ring.add_api_key(ACCOUNT, KEY, SECRET)
    ring.add_api_key(OTHER_ACCOUNT, OTHER_KEY, "o" * 32)
    ring.add_auth_token(ACCOUNT, AUTH_TOKEN)
    return ring


def access(**overrides: Any) -> str:
    values: dict[str, Any] = {
        "account_sid": ACCOUNT,
        "api_key_sid": KEY,
        "api_secret": SECRET,
        "identity": "alice",
        "now": NOW,
    }
    values.update(overrides)
    return create_access_token(**values)


def raw_token(header: dict, claims: dict, secret: str = SECRET) -> str:
    """Sign arbitrary header/claims, for malformed-token cases."""
    body = json.dumps(claims).encode()
    return jwt.PyJWS().encode(body, secret, algorithm="HS256", headers=header)


def code_of(token: str, keyring: Keyring, now: float = NOW + 1) -> int:
    with pytest.raises(AuthenticationError) as info:
        verify_token(token, keyring, now)
    return info.value.code


def test_access_token_has_twilio_header_and_claims():
    token = access(
        ttl=600,
        outgoing_application_sid=APP,
        outgoing_params={"k": "v"},
        region="ie1",
    )
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {
        "typ": "JWT",
        "alg": "HS256",
        "cty": "twilio-fpa;v=1",
        "twr": "ie1",
    }
    claims = describe_unverified(token)["claims"]
    assert claims == {
        "jti": f"{KEY}-{int(NOW)}",
        "iss": KEY,
        "sub": ACCOUNT,
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "grants": {
            "identity": "alice",
            "voice": {
                "incoming": {"allow": True},
                "outgoing": {"application_sid": APP, "params": {"k": "v"}},
            },
        },
    }
    # And it is a plain HS256 JWT signed with the secret.
    assert jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )


def test_access_token_omits_unset_grants():
    claims = describe_unverified(access(incoming_allow=False))["claims"]
    assert claims["grants"] == {"identity": "alice", "voice": {}}
    assert "twr" not in describe_unverified(access())["header"]


def test_access_token_round_trip(keyring):
    claims = verify_token(
        access(outgoing_application_sid=APP, outgoing_params={"a": 1}), keyring, NOW
    )
    assert claims.identity == "alice"
    assert claims.account_sid == ACCOUNT
    assert claims.incoming_allowed is True
    assert claims.outgoing_application_sid == APP
    assert claims.outgoing_params == {"a": "1"}
    assert claims.expires_at == NOW + 3600
    assert claims.kind == "access"


def test_access_token_without_grants_allows_nothing(keyring):
    claims = verify_token(access(incoming_allow=False), keyring, NOW)
    assert claims.incoming_allowed is False
    assert claims.outgoing_application_sid is None


def test_capability_token_round_trip(keyring):
    token = create_capability_token(
        account_sid=ACCOUNT,
        auth_token=AUTH_TOKEN,
        client_name="bob",
        now=NOW,
        outgoing_application_sid=APP,
        outgoing_params={"x": "y z"},
    )
    described = describe_unverified(token)
    assert described["kind"] == "capability"
    assert described["header"] == {"typ": "JWT", "alg": "HS256"}
    assert described["claims"]["iss"] == ACCOUNT
    scopes = described["claims"]["scope"].split()
    assert scopes == [
        f"scope:client:outgoing?appParams=x%3Dy%2Bz&appSid={APP}&clientName=bob",
        "scope:client:incoming?clientName=bob",
    ]
    claims = verify_token(token, keyring, NOW + 1)
    assert claims.kind == "capability"
    assert claims.identity == "bob"
    assert claims.account_sid == ACCOUNT
    assert claims.incoming_allowed
    assert claims.outgoing_application_sid == APP
    assert claims.outgoing_params == {"x": "y z"}


def test_outgoing_only_capability_token_is_anonymous(keyring):
    token = create_capability_token(
        account_sid=ACCOUNT,
        auth_token=AUTH_TOKEN,
        client_name="ignored",
        now=NOW,
        incoming=False,
        outgoing_application_sid=APP,
    )
    claims = verify_token(token, keyring, NOW)
    assert claims.identity == "Anonymous"
    assert not claims.incoming_allowed
    assert claims.outgoing_application_sid == APP


def test_capability_token_with_wrong_auth_token_is_31202(keyring):
    token = create_capability_token(
        account_sid=ACCOUNT, auth_token="x" * 32, client_name="bob", now=NOW
    )
    assert code_of(token, keyring) == 31202


def test_capability_token_of_unknown_account_is_31202(keyring):
    token = create_capability_token(
        account_sid=OTHER_ACCOUNT, auth_token=AUTH_TOKEN, client_name="bob", now=NOW
    )
    assert code_of(token, keyring) == 31202


def test_capability_token_without_client_scope_is_31204(keyring):
    token = raw_token(
        {"typ": "JWT"},
        {"iss": ACCOUNT, "exp": NOW + 60, "scope": "scope:stream:subscribe"},
        AUTH_TOKEN,
    )
    assert code_of(token, keyring) == 31204


def test_expired_capability_token_is_31205(keyring):
    token = create_capability_token(
        account_sid=ACCOUNT, auth_token=AUTH_TOKEN, client_name="bob", now=NOW, ttl=10
    )
    assert code_of(token, keyring, NOW + 10) == 31205


@pytest.mark.parametrize("text", ["", "garbage", "a.b.c", "a.b", 42])
def test_not_a_jwt_is_31204(keyring, text):
    assert code_of(text, keyring) == 31204


@pytest.mark.parametrize(
    "spoil",
    [
        lambda h, c, s: f"{h}.{c}!.{s}",  # outside the base64url alphabet
        lambda h, c, s: f"{h}.{c}+/.{s}",  # the other base64 alphabet
        lambda h, c, s: f"{h}.{c}.{s}AA",  # a lone last character (45)
        lambda h, c, s: f"{h}.{c}日本.{s}",
    ],
)
def test_a_segment_that_is_not_canonical_base64url_is_31204(keyring, spoil):
    good = access()
    verify_token(good, keyring, NOW + 1)
    assert code_of(spoil(*good.split(".")), keyring) == 31204


def test_a_signature_with_unused_bits_set_is_refused(keyring):
    # 32 bytes of HMAC in 43 characters: the last one carries 2 unused bits.
    # Setting them spells the same bytes differently; one token, one spelling.
    header, claims, signature = access().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    spelled = signature[:-1] + alphabet[last | 1]
    assert spelled != signature
    assert code_of(f"{header}.{claims}.{spelled}", keyring) == 31204


def test_wrong_cty_is_31204(keyring):
    token = raw_token(
        {"cty": "twilio-fpa;v=2"},
        {"iss": KEY, "sub": ACCOUNT, "exp": NOW + 60, "grants": {"identity": "a"}},
    )
    assert code_of(token, keyring) == 31204


def test_wrong_alg_is_31204(keyring):
    claims = {"iss": KEY, "sub": ACCOUNT, "exp": NOW + 60, "grants": {"identity": "a"}}
    token = jwt.encode(
        claims, SECRET * 2, algorithm="HS512", headers={"cty": "twilio-fpa;v=1"}
    )
    assert code_of(token, keyring) == 31204


@pytest.mark.parametrize("missing", ["iss", "sub", "exp", "grants", "identity"])
def test_missing_claim_is_31204(keyring, missing):
    claims: dict[str, Any] = {
        "iss": KEY,
        "sub": ACCOUNT,
        "exp": NOW + 60,
        "grants": {"identity": "alice", "voice": {}},
    }
    if missing == "identity":
        del claims["grants"]["identity"]
    else:
        del claims[missing]
    token = raw_token({"cty": "twilio-fpa;v=1"}, claims)
    assert code_of(token, keyring) == 31204


def test_unknown_api_key_is_31202(keyring):
    assert code_of(access(api_key_sid="SK" + "f" * 32), keyring) == 31202


def test_wrong_secret_is_31202(keyring):
    with pytest.raises(AuthenticationError) as error:
        verify_token(access(api_secret="x" * 32), keyring, NOW)
    assert error.value.code == 31202
    assert error.value.message == "JWT signature validation failed"


def test_sub_of_another_account_is_31203(keyring):
    assert code_of(access(account_sid=OTHER_ACCOUNT), keyring) == 31203


def test_expired_is_31205(keyring):
    token = access(ttl=60)
    assert verify_token(token, keyring, NOW + 59).identity == "alice"
    with pytest.raises(AuthenticationError) as error:
        verify_token(token, keyring, NOW + 60)
    assert (error.value.code, error.value.message) == (31205, "JWT token expired")


def test_not_yet_valid_is_31204_beyond_clock_skew(keyring):
    token = access(now=NOW + 120)
    assert code_of(token, keyring, NOW) == 31204
    # 60 s of skew are tolerated.
    assert verify_token(access(now=NOW + 50), keyring, NOW).identity == "alice"


def test_lifetime_over_24_hours_is_31207(keyring):
    assert verify_token(access(ttl=86400), keyring, NOW).identity == "alice"
    with pytest.raises(AuthenticationError) as error:
        verify_token(access(ttl=86401), keyring, NOW)
    assert (error.value.code, error.value.message) == (
        31207,
        "JWT token expiration too long",
    )


def test_keyring_repr_hides_secrets(keyring):
    text = repr(keyring)
    assert KEY in text
    assert SECRET not in text
    assert AUTH_TOKEN not in text


def test_describe_unverified_rejects_non_jwt():
    with pytest.raises(AuthenticationError) as info:
        describe_unverified("nope")
    assert info.value.code == 31204


@pytest.mark.parametrize(
    "scope",
    [
        "client:incoming?clientName=a",  # not a scope URI
        "scope:client:incoming",  # no clientName
        "scope:client:outgoing?clientName=a",  # no appSid
    ],
)
def test_malformed_capability_scopes_are_31204(keyring, scope):
    token = raw_token(
        {"typ": "JWT"}, {"iss": ACCOUNT, "exp": NOW + 60, "scope": scope}, AUTH_TOKEN
    )
    assert code_of(token, keyring) == 31204


def test_non_numeric_nbf_is_31204(keyring):
    claims = {
        "iss": KEY,
        "sub": ACCOUNT,
        "exp": NOW + 60,
        "nbf": "soon",
        "grants": {"identity": "alice"},
    }
    assert code_of(raw_token({"cty": "twilio-fpa;v=1"}, claims), keyring) == 31204


def access_claims(**times: object) -> dict:
    return {"iss": KEY, "sub": ACCOUNT, "grants": {"identity": "alice"}, **times}


def test_future_iat_cannot_stretch_the_24_hour_limit(keyring):
    # exp - iat is 24 h, but exp is 10 days away: Twilio refuses exp > now + 24 h.
    iat = NOW + 10 * 86400
    claims = access_claims(iat=iat, exp=iat + 86400)
    assert code_of(raw_token({"cty": "twilio-fpa;v=1"}, claims), keyring) == 31207
    # The clock skew allowance also applies to exp: 24 h + 60 s still passes.
    claims = access_claims(exp=NOW + 86400 + 60)
    token = raw_token({"cty": "twilio-fpa;v=1"}, claims)
    assert verify_token(token, keyring, NOW).identity == "alice"
    claims = access_claims(exp=NOW + 86400 + 61)
    token = raw_token({"cty": "twilio-fpa;v=1"}, claims)
    assert code_of(token, keyring, NOW) == 31207


def test_iat_in_the_future_beyond_clock_skew_is_31204(keyring):
    claims = access_claims(iat=NOW + 3600, exp=NOW + 7200)
    assert code_of(raw_token({"cty": "twilio-fpa;v=1"}, claims), keyring, NOW) == 31204
    claims = access_claims(iat=NOW + 50, exp=NOW + 7200)
    token = raw_token({"cty": "twilio-fpa;v=1"}, claims)
    assert verify_token(token, keyring, NOW).identity == "alice"


def raw_json_token(header: dict, payload: str, secret: str = SECRET) -> str:
    """Sign literal claims text (NaN, huge integers: what json.dumps won't do)."""
    return jwt.PyJWS().encode(
        payload.encode(), secret, algorithm="HS256", headers=header
    )


@pytest.mark.parametrize(
    "times",
    [
        '"exp": NaN',
        '"exp": Infinity',
        '"exp": 1e400',
        '"exp": ' + "9" * 400,  # float() would raise OverflowError
        '"exp": -1',
        f'"exp": {NOW + 60}, "nbf": NaN',
        f'"exp": {NOW + 60}, "iat": NaN',
        f'"exp": {NOW + 60}, "nbf": -Infinity',
        f'"exp": {NOW + 60}, "iat": ' + "9" * 400,
    ],
)
def test_non_finite_or_absurd_times_are_31204(keyring, times):
    access_payload = (
        f'{{"iss": "{KEY}", "sub": "{ACCOUNT}", "grants": {{"identity": "a"}}, '
        f"{times}}}"
    )
    token = raw_json_token({"cty": "twilio-fpa;v=1"}, access_payload)
    assert code_of(token, keyring) == 31204
    capability_payload = (
        f'{{"iss": "{ACCOUNT}", "scope": "scope:client:incoming?clientName=a", '
        f"{times}}}"
    )
    token = raw_json_token({"typ": "JWT"}, capability_payload, AUTH_TOKEN)
    assert code_of(token, keyring) == 31204


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("part", ["header", "claims"])
def test_deeply_nested_json_is_31204_not_recursion_error(keyring, part):
    nested = b64(b"[" * 3000 + b"]" * 3000)
    header = b64(b'{"alg": "HS256", "cty": "twilio-fpa;v=1"}')
    claims = b64(json.dumps(access_claims(exp=NOW + 60)).encode())
    token = f"{nested}.{claims}.c2ln" if part == "header" else f"{header}.{nested}.c2ln"
    assert code_of(token, keyring) == 31204
    with pytest.raises(AuthenticationError):
        describe_unverified(token)
