"""The web page's pure core: password hashes, sessions, the login limit."""

from __future__ import annotations

from appliance.web.guard import (
    FREE_FAILURES,
    GLOBAL_PER_MINUTE,
    IDLE_S,
    LIFETIME_S,
    LoginLimiter,
    Sessions,
    hash_password,
    password_problem,
    verify_password,
)


def test_a_password_verifies_against_its_hash_only() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert hash_password("correct horse") != stored  # a new salt each time


def test_a_malformed_hash_verifies_nothing() -> None:
    for stored in ("", "plain", "md5$1$2$3$abc$def", "scrypt$x$8$1$abc$def"):
        assert not verify_password("anything", stored)


def test_short_or_mistyped_passwords_are_refused() -> None:
    assert password_problem("12345678", "12345678") is None
    assert password_problem("1234567", "1234567") is not None
    assert password_problem("12345678", "12345679") is not None


def test_login_gives_a_new_session_and_ends_the_old_one() -> None:
    sessions = Sessions()
    anonymous = sessions.visit(None, 0.0)
    assert not anonymous.logged_in
    assert sessions.visit(anonymous.sid, 1.0) is anonymous
    user = sessions.log_in(anonymous, 2.0)
    assert user.logged_in
    assert user.sid != anonymous.sid and user.csrf != anonymous.csrf
    assert not sessions.visit(anonymous.sid, 3.0).logged_in  # no fixation
    assert sessions.visit(user.sid, 4.0) is user


def test_sessions_end_when_idle_and_at_their_lifetime() -> None:
    sessions = Sessions()
    user = sessions.log_in(sessions.visit(None, 0.0), 0.0)
    assert sessions.visit(user.sid, IDLE_S - 1) is user
    assert sessions.visit(user.sid, 2 * IDLE_S + 1) is not user
    busy = sessions.log_in(sessions.visit(None, 0.0), 0.0)
    now = 0.0
    while now + IDLE_S / 2 < LIFETIME_S:
        now += IDLE_S / 2
        assert sessions.visit(busy.sid, now) is busy
    assert sessions.visit(busy.sid, LIFETIME_S + 1) is not busy


def test_a_flood_of_visitors_does_not_end_a_logged_in_session() -> None:
    sessions = Sessions()
    user = sessions.log_in(sessions.visit(None, 0.0), 0.0)
    for i in range(500):
        sessions.visit(None, float(i))
    assert sessions.visit(user.sid, 600.0) is user


def test_the_csrf_token_must_be_the_sessions_own() -> None:
    sessions = Sessions()
    one, two = sessions.visit(None, 0.0), sessions.visit(None, 0.0)
    assert one.form_ok(one.csrf)
    assert not one.form_ok(two.csrf)
    assert not one.form_ok("")


def test_failures_beyond_the_free_ones_wait_twice_as_long_each_time() -> None:
    limiter = LoginLimiter()
    for _ in range(FREE_FAILURES - 1):
        assert limiter.failed("10.0.0.5", 0.0) == 0.0
    waits = [limiter.failed("10.0.0.5", 0.0)]
    assert waits[0] > 0
    assert limiter.wait_s("10.0.0.5", waits[0] / 2) > 0
    assert limiter.wait_s("10.0.0.5", waits[0]) == 0
    waits.append(limiter.failed("10.0.0.5", waits[0]))
    assert waits[1] == 2 * waits[0]
    assert limiter.wait_s("10.0.0.9", 0.0) == 0  # another address is not held
    limiter.succeeded("10.0.0.5")
    assert limiter.wait_s("10.0.0.5", waits[0]) == 0


def test_many_addresses_together_are_held_to_the_global_limit() -> None:
    limiter = LoginLimiter()
    for i in range(GLOBAL_PER_MINUTE):
        limiter.failed(f"10.0.1.{i}", 1.0)
    assert limiter.wait_s("10.0.2.1", 2.0) > 0
    assert limiter.wait_s("10.0.2.1", 61.0) == 0
