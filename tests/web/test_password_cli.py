"""``appliance web-password`` as a real process, and a login on the real page.

The command sets the page's password before anyone visits it (at
provisioning); afterwards the page asks for a login, not for a password, and
takes the one the command was given.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from appliance.web.guard import verify_password
from tests.conftest import scaled
from tests.web.test_server import serve

PASSWORD = "set-before-the-desk"
NOBODY = 65534


def web_password(
    *args: str, stdin: str = "", read_only: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "appliance", "web-password", *args]
    if read_only is not None:
        # Root writes anywhere a mode allows nothing, so the directory is
        # bound read-only in a mount namespace of the command's own (another
        # user could not read a checkout that lives in a private directory).
        command = [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount --bind -o ro "$0" "$0" && exec "$@"',
            str(read_only),
            *command,
        ]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _csrf(html: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_the_password_set_by_the_command_opens_the_page(
    tmp_path: Path,
) -> None:
    state = tmp_path / "web"
    state.mkdir(mode=0o700)
    done = web_password("--state-dir", str(state), stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"web page password set in {state / 'web-password'}\n"
    assert PASSWORD not in done.stdout + done.stderr
    stored = (state / "web-password").read_text()
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert stat.S_IMODE((state / "web-password").stat().st_mode) == 0o600

    jar = aiohttp.CookieJar(unsafe=True)  # an address, not a host name
    async with (
        serve(tmp_path, []) as page,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        # No first-visit form any more: the page wants a login.
        async with http.get(page.url + "setup", ssl=False) as answer:
            assert answer.url.path == "/login"
            html = await answer.text()
        form = {"password": "not-the-one-set", "csrf": _csrf(html)}
        async with http.post(page.url + "login", data=form, ssl=False) as answer:
            assert answer.status == 401
        form = {"password": PASSWORD, "csrf": _csrf(html)}
        async with http.post(page.url + "login", data=form, ssl=False) as answer:
            assert (answer.status, answer.url.path) == (200, "/status")
            assert "Restart" in await answer.text()

    # Again: the password is replaced, and said so.
    new = "replaced-at-the-desk"
    done = web_password("--state-dir", str(state), stdin=f"{new}\n{new}\n")
    assert done.returncode == 0, done.stderr
    assert "password replaced in" in done.stdout
    assert verify_password(new, (state / "web-password").read_text())


def test_a_password_file_must_be_private(tmp_path: Path) -> None:
    state = tmp_path / "web"
    state.mkdir()
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o644)
    done = web_password("--state-dir", str(state), "--password-file", str(secret))
    assert done.returncode == 2
    assert "--password-file" in done.stderr and "0644" in done.stderr
    assert not (state / "web-password").exists()

    secret.chmod(0o600)
    done = web_password("--state-dir", str(state), "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert verify_password(PASSWORD, (state / "web-password").read_text())


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        ("", "Use at least 8 characters."),
        ("\n\n", "Use at least 8 characters."),
        ("short\nshort\n", "Use at least 8 characters."),
        (f"{PASSWORD}\nanother-one-here\n", "The two passwords differ."),
        (f"{PASSWORD}\n", "give the password twice"),
    ],
)
def test_a_weak_or_mistyped_password_is_refused(
    tmp_path: Path, stdin: str, why: str
) -> None:
    done = web_password("--state-dir", str(tmp_path), stdin=stdin)
    assert done.returncode == 2
    assert why in done.stderr
    assert done.stderr.startswith("appliance: error: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "web-password").exists()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may reach (pytest's tmp_path is its own 0700)."""
    path = Path(tempfile.mkdtemp(prefix="web-password-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_state_directory_it_may_not_write_is_an_error(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    if os.geteuid() == 0:
        done = web_password(
            "--state-dir", str(state), stdin=f"{PASSWORD}\n" * 2, read_only=state
        )
        why = "Read-only file system"
    else:
        state.chmod(0o555)
        done = web_password("--state-dir", str(state), stdin=f"{PASSWORD}\n" * 2)
        why = "Permission denied"
    assert done.returncode == 1, done.stderr
    assert f"cannot write {state / 'web-password'}: {why}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(state.iterdir()) == []

    done = web_password("--state-dir", str(shared_dir / "none"), stdin="x\nx\n")
    assert done.returncode == 1
    assert "no state directory" in done.stderr


def test_the_file_belongs_to_the_state_directorys_owner(shared_dir: Path) -> None:
    # The service reads the file as its own user; root setting the password
    # for it gives the file to that user.
    if os.geteuid() == 0:
        os.chown(shared_dir, NOBODY, NOBODY)
    done = web_password("--state-dir", str(shared_dir), stdin=f"{PASSWORD}\n" * 2)
    assert done.returncode == 0, done.stderr
    made = (shared_dir / "web-password").stat()
    owned = shared_dir.stat()
    assert (made.st_uid, made.st_gid) == (owned.st_uid, owned.st_gid)
    assert stat.S_IMODE(made.st_mode) == 0o600
