"""The device authorization grant's core (RFC 8628), without any I/O."""

from __future__ import annotations

import math
import random

import pytest

from appliance.provisioning.admin import MAX_LOGIN_FAILURES, Sessions
from appliance.provisioning.grant import (
    FAILURE_WINDOW_S,
    MAX_FAILURES_PER_CLIENT,
    MAX_FAILURES_TOTAL,
    SLOW_DOWN_STEP_S,
    USER_CODE_ALPHABET,
    DeviceGrants,
    GrantError,
    hash_secret,
    normalize_user_code,
    verify_secret,
)


def grants(**kw) -> DeviceGrants:
    rng = random.Random(8628)
    return DeviceGrants(random_bytes=rng.randbytes, **kw)


def error_of(call) -> str:
    with pytest.raises(GrantError) as info:
        call()
    return info.value.error


def test_user_codes_have_rfc_8628_entropy_and_shape():
    g = grants()
    codes = [g.issue(0.0).user_code for _ in range(60)]
    for code in codes:
        assert len(code) == 9 and code[4] == "-"
        assert set(code.replace("-", "")) <= set(USER_CODE_ALPHABET)
    assert len(set(codes)) == len(codes)
    # §5.1: 20 letters, 8 places: more than 34 bits.
    assert math.log2(len(USER_CODE_ALPHABET) ** 8) > 34
    assert not set("AEIOUY") & set(USER_CODE_ALPHABET)


def test_letters_are_drawn_uniformly():
    g = DeviceGrants(random_bytes=random.Random(1).randbytes)
    counts = dict.fromkeys(USER_CODE_ALPHABET, 0)
    for _ in range(500):
        for c in g._user_code():
            counts[c] += 1
    expected = 500 * 8 / 20
    assert all(abs(n - expected) < expected * 0.3 for n in counts.values())


def test_polling_pending_then_approved_once():
    g = grants()
    auth = g.issue(0.0, "phone 1")
    assert auth.interval == 5 and auth.expires_in == 600
    assert error_of(lambda: g.poll(auth.device_code, 0.0)) == "authorization_pending"
    assert [p.client_info for p in g.pending(1.0)] == ["phone 1"]
    g.approve(auth.user_code.lower().replace("-", ""), "alice", "Alice", "s", 2.0)
    approved = g.poll(auth.device_code, 5.0)
    assert (approved.identity, approved.name) == ("alice", "Alice")
    # Spent: a second poll must not enroll another phone.
    assert error_of(lambda: g.poll(auth.device_code, 10.0)) == "invalid_grant"


def test_polling_too_fast_slows_down_for_good():
    g = grants()
    auth = g.issue(0.0)
    error_of(lambda: g.poll(auth.device_code, 0.0))
    assert error_of(lambda: g.poll(auth.device_code, 1.0)) == "slow_down"
    # §3.5: the interval is now 5 s longer, for this and all later requests.
    assert error_of(lambda: g.poll(auth.device_code, 6.5)) == "slow_down"
    late = 6.5 + 5 + 2 * SLOW_DOWN_STEP_S
    assert error_of(lambda: g.poll(auth.device_code, late)) == "authorization_pending"


def test_denied_and_expired_codes():
    g = grants()
    denied = g.issue(0.0)
    g.deny(denied.user_code, "s", 1.0)
    assert error_of(lambda: g.poll(denied.device_code, 10.0)) == "access_denied"
    expired = g.issue(0.0)
    assert error_of(lambda: g.poll(expired.device_code, 600.0)) == "expired_token"
    late = g.issue(0.0)
    assert error_of(lambda: g.lookup(late.user_code, "s", 601.0)) == "invalid_grant"
    assert error_of(lambda: g.poll("nonsense", 1.0)) == "invalid_grant"


def test_wrong_codes_are_rate_limited_per_client():
    g = grants()
    auth = g.issue(0.0)
    for _ in range(MAX_FAILURES_PER_CLIENT):
        assert error_of(lambda: g.lookup("BBBB-BBBB", "eve", 1.0)) == "invalid_grant"
    # Even the right code is refused now, for this client only.
    assert error_of(lambda: g.lookup(auth.user_code, "eve", 2.0)) == "slow_down"
    assert g.lookup(auth.user_code, "admin", 2.0).user_code == auth.user_code
    assert g.lookup(auth.user_code, "eve", 2.0 + FAILURE_WINDOW_S).user_code


def test_wrong_codes_are_capped_overall_across_clients():
    # Many clients, each under its own limit, still meet the overall cap
    # (RFC 8628 §5.1): a botnet guessing slowly from many addresses.
    g = grants()
    auth = g.issue(0.0)
    per_client = MAX_FAILURES_PER_CLIENT - 1
    for n in range(MAX_FAILURES_TOTAL - 1):
        client, at = f"bot-{n // per_client}", 1.0 + n * 0.1
        wrong = lambda c=client, t=at: g.lookup("BBBB-BBBB", c, t)  # noqa: E731
        assert error_of(wrong) == "invalid_grant"
    # One short of the cap: a newcomer with the right code still gets in.
    assert g.lookup(auth.user_code, "admin", 6.0).user_code == auth.user_code
    assert error_of(lambda: g.lookup("BBBB-BBBB", "bot-x", 6.0)) == "invalid_grant"
    # At the cap: everyone is slowed down, even with the right code.
    assert error_of(lambda: g.lookup(auth.user_code, "admin", 7.0)) == "slow_down"
    assert error_of(lambda: g.lookup(auth.user_code, "new", 7.0)) == "slow_down"
    # Once the failures leave the window, the right code works again.
    later = 6.0 + FAILURE_WINDOW_S
    assert g.lookup(auth.user_code, "admin", later).user_code == auth.user_code


def test_malformed_code_is_invalid_request():
    g = grants()
    assert error_of(lambda: g.lookup("AEIO-1234", "s", 0.0)) == "invalid_request"
    assert normalize_user_code(" bcdf-ghjk ") == "BCDFGHJK"


def test_deadline_and_forgetting():
    g = grants()
    assert g.next_deadline() is None
    auth = g.issue(0.0)
    deadline = g.next_deadline()
    assert deadline is not None and deadline > 600
    g.tick(deadline)
    assert g.next_deadline() is None
    assert error_of(lambda: g.poll(auth.device_code, deadline)) == "invalid_grant"


def test_secret_hash_round_trip():
    stored = hash_secret("correct horse")
    assert verify_secret("correct horse", stored)
    assert not verify_secret("wrong", stored)
    assert not verify_secret("x", "md5$00$00")
    assert not verify_secret("x", "garbage")


def test_logins_are_rate_limited_and_sessions_rotate():
    sessions = Sessions()
    anonymous = sessions.new(0.0)
    for _ in range(MAX_LOGIN_FAILURES):
        sessions.check_login_allowed("10.0.0.9", 1.0)
        sessions.login_failed("10.0.0.9", 1.0)
    with pytest.raises(GrantError):
        sessions.check_login_allowed("10.0.0.9", 2.0)
    sessions.check_login_allowed("127.0.0.1", 2.0)
    admin = sessions.logged_in(anonymous, 3.0)
    assert admin.sid != anonymous.sid and admin.csrf != anonymous.csrf
    assert sessions.get(anonymous.sid, 3.0) is None
    assert sessions.get(admin.sid, 3.0) is admin
    assert admin.csrf_ok(admin.csrf) and not admin.csrf_ok(anonymous.csrf)
