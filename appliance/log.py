"""The firmware's one logging policy: levels, line format, redaction, debug switch.

Every entry point (``appliance run`` and the other CLI commands, ``appliance
sim``, ``appliance demo``) calls :func:`configure_logging`; nothing else
touches the root logger. Modules log through ``logging.getLogger(__name__)``
with %-style arguments (style guide 4.7).

Level policy (after websockets' ``logging.rst``):

ERROR
    A bug, or an unrecoverable failure of a subsystem (the front panel cannot
    open its GPIO pins, the gateway refused the token for good).
WARNING
    Degraded but continuing: an audio xrun, reconnecting, a fallback backend,
    a sound that could not be fetched and plays the default.
INFO
    Lifecycle: service start/stop, registered/unregistered, call started and
    ended (with its duration), token refreshed, update applied.
DEBUG
    Every signaling message and state change, with the websockets prefixes:
    ``> `` sent, ``< `` received, ``= `` state change, ``x `` closing,
    ``! `` error (with a traceback). Hot paths guard these with a cached
    ``logger.isEnabledFor(logging.DEBUG)``.

Line format. On a terminal or a pipe: ``LEVEL name: message``. Under systemd,
when stderr *is* the journal (systemd sets ``JOURNAL_STREAM`` to the
``device:inode`` of that stream, systemd.exec(5)), lines carry no timestamp
(journald adds its own) and start with the syslog priority ``<N>`` that
journald parses into the entry's priority (sd-daemon(3), ``SD_WARNING`` ...);
every line of a multi-line record (a traceback) gets the prefix, because
journald stores each line as its own entry.

Call correlation. A Connection logs through ``logging.LoggerAdapter(logger,
{"call_sid": sid})``; the handler's :class:`CallSidFilter` turns that into
``[CAxxxx] `` in front of the message, so every line of one call can be found
with one grep.

Secrets. Access tokens are JWTs; :class:`RedactionFilter` masks anything
JWT-shaped (three base64url parts, the first starting ``eyJ``, RFC 7519 §3)
and the values of known secret fields (``token``, ``secret``, ``password``,
``credential``, ...) in the message, its arguments and its traceback, before
any handler formats it. :class:`appliance.config.Secret` already prints as
``********``; this catches the strings that never were a Secret (a signaling
payload at DEBUG, an exception quoting a request).

Values from the network. A field a client or gateway sent (a ``To``, an
identity, a frame's type, a whole frame at DEBUG) goes through :func:`wire`
before it reaches a log call: control and non-ASCII characters are escaped, so
a newline cannot forge a log line nor a bidi override hide one, and the value
is cut to a stated length, so a 900 kB field writes a short line, not 900 kB.
Complaints about one peer (malformed frames, refused fields) go through a
:class:`LogLimiter`, so a socket sending a flood of bad frames writes a few
lines and then a count, not a line per frame.

Debug on demand. Twilio.Device's ``debug`` option turns on DEBUG for the
engine alone; :func:`enable_debug` does that for one logger and returns the
function that undoes it, so the global level is never changed for good and two
Devices that both asked for debug do not undo each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

__all__ = [
    "QUIET_LOGGERS",
    "WIRE_LIMIT",
    "CallSidFilter",
    "LineFormatter",
    "LogLimiter",
    "RedactionFilter",
    "configure_logging",
    "debug_enabled",
    "enable_debug",
    "journal_stream",
    "redact",
    "syslog_priority",
    "wire",
]

#: Libraries that log every packet at DEBUG (aiortc: RTP/RTCP, aioice: STUN,
#: websockets: frames); they stay at INFO or above whatever the level.
QUIET_LOGGERS = ("aiortc", "aioice", "websockets")

MASK = "********"

# RFC 7519 §3: a JWS compact serialisation is three base64url parts joined by
# dots; a JOSE header is a JSON object, so its encoding starts "eyJ" ('{"').
# The signature part is empty for an unsecured JWT ("alg": "none").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

#: Field names whose values are secrets wherever they appear: JSON payloads
#: ("token": "..."), reprs (token='...'), key=value pairs.
SECRET_FIELDS = (
    "accesstoken",
    "access_token",
    "api_secret",
    "auth_token",
    "authtoken",
    "credential",
    "password",
    "psk",
    "secret",
    "token",
)
_FIELD = "|".join(SECRET_FIELDS)
_QUOTED_FIELD = re.compile(
    rf"""(?P<head>["']?\b(?:{_FIELD})["']?\s*[:=]\s*)(?P<q>["'])(?P<value>.*?)(?P=q)""",
    re.IGNORECASE,
)
_BARE_FIELD = re.compile(
    rf"""(?P<head>\b(?:{_FIELD})=)(?P<value>[^\s"',;&)]+)""", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with JWT-shaped strings and secret field values masked."""
    text = _JWT.sub(MASK, text)
    text = _QUOTED_FIELD.sub(
        lambda m: f"{m['head']}{m['q']}{MASK}{m['q']}" if m["value"] else m[0], text
    )
    return _BARE_FIELD.sub(lambda m: f"{m['head']}{MASK}", text)


#: Characters of a network value shown in a log line (:func:`wire`).
WIRE_LIMIT = 80


def wire(value: object, limit: int = WIRE_LIMIT) -> str:
    """A value received from the network, fit for one log line.

    Strings are shown as they are but with every control or other
    non-printable character, and the backslash, escaped (``\\n``,
    ``\\u202e``, ``\\\\``); other values by
    their ``repr``; the result is cut after ``limit`` characters of the value
    with a note of how many more there were. Secrets are still masked by
    :class:`RedactionFilter` afterwards.
    """
    text = value if isinstance(value, str) else repr(value)
    shown = "".join(
        c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode()
        for c in text[:limit]
    )
    more = len(text) - limit
    return f"{shown}...(+{more} chars)" if more > 0 else shown


class LogLimiter:
    """Rate limit for complaints about one peer: ``burst`` lines per window.

    Pure (the caller passes ``now``), so sans-I/O cores can use it. Each
    ``key`` (a session) may log ``burst`` times per ``window`` seconds; the
    records beyond that are counted, and the next record allowed reports the
    count (:meth:`allow`), as does :meth:`forget` when the peer goes away.

    Example::

        limiter = LogLimiter()
        suppressed = limiter.allow(sid, now)
        if suppressed is not None:
            logger.info("session %d: bad frame%s", sid, LogLimiter.note(suppressed))
    """

    def __init__(self, *, burst: int = 5, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        # key -> [window start, lines in window, suppressed since last line]
        self._state: dict[object, list[float]] = {}

    def allow(self, key: object, now: float) -> int | None:
        """``None``: do not log. Else log, noting this many suppressed before."""
        state = self._state.get(key)
        if state is None or now - state[0] >= self.window:
            suppressed = int(state[2]) if state is not None else 0
            self._state[key] = [now, 1, 0]
            return suppressed
        if state[1] < self.burst:
            state[1] += 1
            suppressed, state[2] = int(state[2]), 0
            return suppressed
        state[2] += 1
        return None

    def forget(self, key: object) -> int:
        """Drop ``key``; return how many of its records were never reported."""
        state = self._state.pop(key, None)
        return int(state[2]) if state is not None else 0

    @staticmethod
    def note(suppressed: int) -> str:
        """`` (N similar not logged)`` or ``""``."""
        return f" ({suppressed} similar not logged)" if suppressed else ""


class RedactionFilter(logging.Filter):
    """Masks secrets in every record it sees (message, arguments, traceback).

    The message is formatted once here and the record's ``msg``/``args``
    replaced by the redacted text, so every handler after this one sees the
    masked version.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatter.format() reuses exc_text when it is set.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class CallSidFilter(logging.Filter):
    """Adds ``record.call``: ``"[CAxxxx] "`` for a call's records, else ``""``.

    The sid comes from ``extra={"call_sid": sid}``, which a
    ``LoggerAdapter(logger, {"call_sid": sid})`` passes on every call.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        sid = getattr(record, "call_sid", None)
        record.call = f"[{sid}] " if sid else ""
        return True


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (RFC 5424 §6.2.1 severities)."""
    if levelno >= logging.CRITICAL:
        return 2  # crit
    if levelno >= logging.ERROR:
        return 3  # err
    if levelno >= logging.WARNING:
        return 4  # warning
    if levelno >= logging.INFO:
        return 6  # info
    return 7  # debug


class LineFormatter(logging.Formatter):
    """``LEVEL name: [CAxxxx] message``, or ``<N>name: ...`` for journald."""

    def __init__(self, *, journal: bool = False) -> None:
        fmt = "%(name)s: %(call)s%(message)s"
        super().__init__(fmt if journal else "%(levelname)s " + fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "call"):  # a handler without CallSidFilter
            CallSidFilter().filter(record)
        text = super().format(record)
        if not self.journal:
            return text
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


def journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal, per ``$JOURNAL_STREAM``.

    systemd sets ``JOURNAL_STREAM=DEVICE:INODE`` for a service whose stdout or
    stderr is connected to the journal; comparing it with the stream's own
    ``fstat`` tells a redirected stderr (``2>file`` in ExecStart) from the
    journal (systemd.exec(5), "Environment variables in spawned processes").
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file (a test buffer)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of the record.

    As CPython's own ``logging._StderrHandler`` (the last-resort handler)
    does, so that a handler configured before stderr is replaced (pytest's
    capture, a daemon redirecting it) does not keep writing to the old one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_lock = threading.Lock()
_handler: logging.Handler | None = None


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    level: str | int = logging.WARNING,
    *,
    stream: TextIO | None = None,
    journal: bool | None = None,
    quiet: Sequence[str] = QUIET_LOGGERS,
    quiet_level: str | int = logging.INFO,
) -> logging.Handler:
    """Install the firmware's handler on the root logger at ``level``.

    Calling it again replaces the handler it installed before (and only
    that one), so the CLI can configure early and a command reconfigure
    with its own level.

    Args:
        level: ``"debug"``, ``"INFO"``, ... or a ``logging`` number.
        stream: where lines go; ``None`` is ``sys.stderr`` at the time of each
            record.
        journal: journald format; ``None`` detects it (:func:`journal_stream`).
        quiet: loggers held at ``quiet_level`` or above whatever ``level`` is.
        quiet_level: see ``quiet``.

    Returns:
        The handler, with :class:`RedactionFilter` and :class:`CallSidFilter`.
    """
    global _handler  # one process, one policy
    number = _level_number(level)
    handler: logging.Handler = (
        _StderrHandler() if stream is None else logging.StreamHandler(stream)
    )
    if journal is None:
        journal = journal_stream(sys.stderr if stream is None else stream)
    handler.setFormatter(LineFormatter(journal=journal))
    handler.addFilter(RedactionFilter())
    handler.addFilter(CallSidFilter())
    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
            _handler.close()
        root.addHandler(handler)
        _handler = handler
    root.setLevel(number)
    for name in quiet:
        logging.getLogger(name).setLevel(max(number, _level_number(quiet_level)))
    return handler


_debug_counts: dict[str, tuple[int, int]] = {}  # name -> (enables, level before)


def enable_debug(logger_name: str = "appliance") -> Callable[[], None]:
    """Log DEBUG from ``logger_name`` (and its children) until undone.

    For Twilio.Device's ``debug`` option: the engine calls
    ``undo = enable_debug("appliance")`` when the option is on and ``undo()``
    when the Device is destroyed. Records of that logger then reach the
    handler whatever the root level is; other loggers keep theirs. Enables
    are counted per logger: the level in force before the first one comes
    back when the last one is undone. The returned function does its work
    once; calling it again does nothing.
    """
    log = logging.getLogger(logger_name)
    with _lock:
        count, before = _debug_counts.get(logger_name, (0, log.level))
        _debug_counts[logger_name] = (count + 1, before)
        log.setLevel(logging.DEBUG)
    done = False

    def undo() -> None:
        nonlocal done
        with _lock:
            if done:
                return
            done = True
            count, before = _debug_counts.pop(logger_name)
            if count > 1:
                _debug_counts[logger_name] = (count - 1, before)
            else:
                log.setLevel(before)

    return undo


@contextlib.contextmanager
def debug_enabled(logger_name: str = "appliance") -> Iterator[None]:
    """:func:`enable_debug` for the duration of a ``with`` block."""
    undo = enable_debug(logger_name)
    try:
        yield
    finally:
        undo()
