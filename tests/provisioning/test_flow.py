"""The phone's provisioning flow (RFC 8628 client side) and token refresh,
without any I/O: results in, actions out, time as a number."""

from __future__ import annotations

from appliance.provisioning.flow import (
    BACKOFF_MAX_S,
    REJECTED_RETRY_S,
    ApplyToken,
    FetchToken,
    Phase,
    PhoneFlow,
    Poll,
    RequestCode,
    SaveCredential,
)

URI = "http://p/device?user_code=BCDF-GHJK"


def waiting_flow(interval: float = 5.0) -> PhoneFlow:
    flow = PhoneFlow(jitter=lambda: 1.0)
    flow.start(False, 0.0)
    assert flow.actions_to_run() == [RequestCode()]
    assert flow.waiting_for_provisioning
    flow.code_received("dc", "BCDF-GHJK", URI, 600, interval, 0.0)
    return flow


def test_unprovisioned_phone_shows_the_code_and_polls_at_the_interval():
    flow = waiting_flow()
    view = flow.view()
    assert (view.active, view.user_code, view.uri) == (True, "BCDF-GHJK", URI)
    assert flow.next_deadline() == 5.0
    flow.tick(4.9)
    assert flow.actions_to_run() == []
    flow.tick(5.0)
    assert flow.actions_to_run() == [Poll("dc")]
    flow.poll_answered("authorization_pending", "", "", 5.1)
    assert flow.next_deadline() == 10.1


def test_slow_down_adds_five_seconds_for_good():
    flow = waiting_flow()
    flow.tick(5.0)
    flow.poll_answered("slow_down", "", "", 5.0)
    assert flow.next_deadline() == 15.0
    flow.tick(15.0)
    flow.poll_answered("authorization_pending", "", "", 15.0)
    assert flow.next_deadline() == 25.0


def test_connection_failures_double_the_polling_interval():
    flow = waiting_flow()
    flow.tick(5.0)
    flow.request_failed(5.0)
    assert flow.next_deadline() == 15.0
    flow.tick(15.0)
    flow.request_failed(15.0)
    assert flow.next_deadline() == 35.0


def test_approval_saves_the_credential_then_fetches_and_applies_a_token():
    flow = waiting_flow()
    flow.tick(5.0)
    flow.actions_to_run()
    flow.poll_answered(None, "PHx.secret", "alice", 5.0)
    assert flow.actions_to_run() == [SaveCredential("PHx.secret", "alice")]
    assert flow.phase is Phase.SAVING
    flow.credential_saved(5.1)
    assert flow.actions_to_run() == [FetchToken()]
    flow.token_received("jwt", "alice", 3600, 5.2)
    assert flow.actions_to_run() == [ApplyToken("jwt", "alice")]
    assert not flow.view().active and not flow.waiting_for_provisioning


def test_denied_or_expired_codes_start_over():
    for error, message in (
        ("access_denied", "Denied; new code"),
        ("expired_token", "Code expired; new code"),
        ("invalid_grant", "New code"),
    ):
        flow = waiting_flow()
        flow.tick(5.0)
        flow.actions_to_run()
        flow.poll_answered(error, "", "", 5.0)
        assert flow.actions_to_run() == [RequestCode()]
        assert flow.view().message == message
    flow = waiting_flow()
    flow.tick(600.0)
    assert flow.actions_to_run() == [RequestCode()]


def test_refresh_on_token_will_expire_with_jittered_backoff():
    draws = iter([0.0, 1.0, 0.5] + [1.0] * 20)
    flow = PhoneFlow(jitter=lambda: next(draws))
    flow.start(True, 0.0)
    assert flow.actions_to_run() == [FetchToken()]
    flow.token_received("t1", "alice", 60, 0.0)
    flow.actions_to_run()
    flow.token_will_expire(50.0)
    assert flow.actions_to_run() == [FetchToken()]
    delays = []
    now = 50.0
    for _ in range(10):
        flow.request_failed(now)
        deadline = flow.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        flow.tick(now)
        if now < 60.0:
            assert flow.actions_to_run() == [FetchToken()]
        else:
            flow.actions_to_run()
    # Delay d drawn from [d/2, d]: 1 s doubling, capped at 60 s.
    assert delays[:3] == [0.5, 2.0, 3.0]
    assert max(delays) <= BACKOFF_MAX_S
    # The token expired meanwhile: the screen says so; retries go on.
    assert flow.view().message == "offline: token expired"
    flow.token_received("t2", "alice", 60, now)
    assert flow.actions_to_run() == [ApplyToken("t2", "alice")]
    assert not flow.view().active


def test_a_revoked_phone_says_so_and_checks_rarely():
    flow = PhoneFlow(jitter=lambda: 1.0)
    flow.start(True, 0.0)
    flow.actions_to_run()
    flow.token_refused("phone_revoked", 1.0)
    assert flow.view().message == "Phone revoked by the administrator"
    assert flow.next_deadline() == 1.0 + REJECTED_RETRY_S
    flow.tick(1.0 + REJECTED_RETRY_S)
    assert flow.actions_to_run() == [FetchToken()]
    assert flow.view().message == "Phone revoked by the administrator"
    flow.token_refused("invalid_client", 400.0)
    assert "rejected" in flow.view().message


def test_unreachable_provisioner_before_the_first_code():
    flow = PhoneFlow(jitter=lambda: 0.0)
    flow.start(False, 0.0)
    flow.actions_to_run()
    flow.request_failed(0.0)
    assert flow.view().message == "Provisioner unreachable"
    assert flow.next_deadline() == 0.5
    flow.tick(0.5)
    assert flow.actions_to_run() == [RequestCode()]
