"""``appliance web-password``: set the web page's password before its first visit.

Without it, whoever reaches the page first sets the password (there is no
default one). Whoever prepares a phone sets it here instead, with a shell on
the phone after ``appliance install`` or on the image, before the phone goes
on a desk and on the LAN; the same command replaces a forgotten one.

The password is never taken on the command line, where every user sees it in
``ps``: it is typed twice at the terminal, read from standard input as two
lines, or read from a file only its owner may open (``--password-file``,
mode 0600). It is held to the first-visit form's rules
(:func:`~appliance.web.guard.password_problem`) and kept exactly as the page
keeps it (:func:`~appliance.web.account.write_password`: scrypt, mode 0600,
written atomically), in the state directory the service's page reads.

Run as root, the file is given to the state directory's owner (the service's
user), since the service must read it. A running service checks the next
login against the new password; sessions already open stay open until they
end or the service restarts.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.files import read_private

__all__ = ["DEFAULT_STATE_DIR", "add_web_password_parser"]

#: The service's StateDirectory, where the page keeps its password hash
#: unless ``web.state_dir`` moves it.
DEFAULT_STATE_DIR = Path("/var/lib/appliance")


def add_web_password_parser(subparsers: Any) -> None:
    """Add ``appliance web-password``."""
    parser = subparsers.add_parser(
        "web-password",
        help="set the web page's password (read from stdin or a 0600 file)",
        description="Set or replace the password of the phone's web page, so "
        "that nobody else sets it on a first visit. The password is typed "
        "twice, or given as two lines on standard input, or read from "
        "--password-file (mode 0600); never on the command line. At least "
        "8 characters.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"the page's state directory: web.state_dir when the config "
        f"sets it (default $STATE_DIRECTORY, else {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password from FILE (one line, mode 0600)",
    )
    parser.set_defaults(handler=run_web_password)


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"appliance: error: {message}\n")
    return status


def _state_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else DEFAULT_STATE_DIR


def _read_twice() -> tuple[str, str]:
    """The password and its repetition: typed at the terminal, or two lines."""
    if sys.stdin.isatty():
        first = getpass.getpass("new web page password: ")
        return first, getpass.getpass("the same again: ")
    first = sys.stdin.readline()
    second = sys.stdin.readline()
    if first and not second:
        raise ConfigError("standard input", "give the password twice, on two lines")
    return first.rstrip("\r\n"), second.rstrip("\r\n")


def run_web_password(args: argparse.Namespace) -> int:
    """Handler of ``appliance web-password``."""
    from appliance.web.account import PASSWORD_NAME, write_password
    from appliance.web.guard import password_problem

    directory = _state_dir(args.state_dir)
    if not directory.is_dir():
        return _fail(
            f"no state directory {directory} (install the phone first, or give "
            "--state-dir, the page's web.state_dir)",
            1,
        )
    try:
        if args.password_file is not None:
            password = read_private(args.password_file, "--password-file")
            repeated = password
        else:
            password, repeated = _read_twice()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (EOFError, KeyboardInterrupt):
        return _fail("no password given", 2)
    problem = password_problem(password, repeated)
    if problem is not None:
        return _fail(f"not set: {problem}", 2)
    owned = directory.stat()
    owner = (
        (owned.st_uid, owned.st_gid)
        if os.geteuid() == 0 and owned.st_uid != 0
        else None
    )
    path = directory / PASSWORD_NAME
    replacing = path.exists()
    try:
        write_password(path, password, owner)
    except OSError as exc:
        return _fail(
            f"cannot write {path}: {exc.strerror or exc} (run it as the "
            "service's user or as root)",
            1,
        )
    done = "replaced" if replacing else "set"
    sys.stdout.write(f"web page password {done} in {path}\n")
    return 0
