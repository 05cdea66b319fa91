"""The logging policy: redaction, call sids, journald lines, debug on demand."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Secret
from appliance.log import (
    QUIET_LOGGERS,
    configure_logging,
    debug_enabled,
    enable_debug,
    journal_stream,
    redact,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJkZXNrLTEiLCJleHAiOjE3MDAwMDAwMDB9"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures the root logger; put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = (*QUIET_LOGGERS, "appliance", "appliance.phone.connection")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def configured(level: str = "debug", *, journal: bool = False) -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, stream=out, journal=journal)
    return out


# --- redaction ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"> register {{'type': 'register', 'token': '{JWT}'}}",
        f'< {{"payload": {{"accessToken": "{JWT}"}}}}',
        f"connecting with {JWT}",
        f"GET /signal?AccessToken={JWT}",
        'api_secret="hunter2" in the request',
        "auth_token='hunter2'",
        "Credential: 'hunter2'",
        "password=hunter2&user=bob",
    ],
)
def test_secrets_are_masked(text: str) -> None:
    masked = redact(text)
    assert "hunter2" not in masked
    assert JWT not in masked and JWT.split(".")[2] not in masked
    assert "********" in masked


@pytest.mark.parametrize(
    "text",
    [
        "phone.token_file: /var/lib/appliance/token is empty",
        "token will expire in 30 s",
        "registered as desk-1; 2 tokens refreshed",
        "eyJ alone is not a token",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_every_record_is_redacted_message_args_and_traceback() -> None:
    out = configured()
    log = logging.getLogger("appliance.test")
    log.debug("> %s", {"type": "listen", "payload": {"token": JWT}})
    log.info("token %s refreshed", JWT)
    try:
        raise ValueError(f"gateway refused {JWT}")
    except ValueError:
        log.exception("setup failed")
    log.warning("secret %s", Secret("hunter2"))
    text = out.getvalue()
    assert JWT not in text and JWT.split(".")[2] not in text
    assert "hunter2" not in text
    assert "ValueError: gateway refused ********" in text
    assert text.count("********") >= 4


# --- call sids -------------------------------------------------------------------


def test_a_call_adapter_shows_the_call_sid() -> None:
    out = configured()
    # The adapter Connection keeps as self.log (appliance/phone/connection.py).
    logger = logging.getLogger("appliance.phone.connection")
    call_log = logging.LoggerAdapter(logger, {"call_sid": "CA0123abcd"})
    call_log.info("call accepted")
    logging.LoggerAdapter(logger, {"call_sid": None}).info("call created")
    logger.info("no call here")
    assert out.getvalue().splitlines() == [
        "INFO appliance.phone.connection: [CA0123abcd] call accepted",
        "INFO appliance.phone.connection: call created",
        "INFO appliance.phone.connection: no call here",
    ]


# --- journald ---------------------------------------------------------------------


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    out = configured(journal=True)
    log = logging.getLogger("appliance.test")
    log.debug("= state registered")
    log.info("phone service started")
    log.warning("reconnecting")
    log.error("front panel disabled")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("! crashed")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "<7>appliance.test: = state registered",
        "<6>appliance.test: phone service started",
        "<4>appliance.test: reconnecting",
        "<3>appliance.test: front panel disabled",
    ]
    # journald stores each line as an entry: the traceback keeps its priority.
    assert lines[4] == "<3>appliance.test: ! crashed"
    assert all(line.startswith("<3>") for line in lines[5:])
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_is_detected_from_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert journal_stream(stream)
        configure_logging("info", stream=stream)
        logging.getLogger("appliance.test").warning("degraded")
        stream.flush()
        assert (tmp_path / "journal").read_text() == "<4>appliance.test: degraded\n"
    # A stderr redirected elsewhere (2>file) is not the journal.
    with open(tmp_path / "other", "w") as other:
        assert not journal_stream(other)
    assert not journal_stream(io.StringIO())
    monkeypatch.delenv("JOURNAL_STREAM")
    with open(tmp_path / "journal") as stream:
        assert not journal_stream(stream)


def test_plain_lines_without_the_journal() -> None:
    out = configured("info")
    logging.getLogger("appliance.app").info("phone service started")
    assert out.getvalue() == "INFO appliance.app: phone service started\n"


# --- configuration ------------------------------------------------------------------


def test_configure_is_idempotent_and_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    first = configured("debug")
    second = configured("warning")
    ours = [h for h in root.handlers if getattr(h, "stream", None) in (first, second)]
    assert len(ours) == 1
    assert foreign in root.handlers  # only its own handler is replaced
    assert root.level == logging.WARNING
    logging.getLogger("appliance.test").info("not shown")
    logging.getLogger("appliance.test").warning("shown once")
    assert first.getvalue() == ""
    assert second.getvalue() == "WARNING appliance.test: shown once\n"
    root.removeHandler(foreign)


def test_media_libraries_stay_quiet_at_debug() -> None:
    configured("debug")
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).level == logging.INFO
    configured("error")
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).level == logging.ERROR


def test_enable_debug_is_undone_and_counted() -> None:
    out = configured("info")
    engine = logging.getLogger("appliance")
    engine.setLevel(logging.NOTSET)
    log = logging.getLogger("appliance.phone.device")
    first = enable_debug("appliance")
    second = enable_debug("appliance")
    log.debug("> register")
    logging.getLogger("aiortc").debug("rtp packet")  # other loggers unchanged
    first()
    first()  # a second call does nothing
    log.debug("< registered")  # the other enable still holds
    second()
    log.debug("not shown")
    assert engine.level == logging.NOTSET
    assert logging.getLogger().level == logging.INFO
    with debug_enabled("appliance"):
        log.debug("= state busy")
    log.debug("not shown either")
    assert out.getvalue().splitlines() == [
        "DEBUG appliance.phone.device: > register",
        "DEBUG appliance.phone.device: < registered",
        "DEBUG appliance.phone.device: = state busy",
    ]
