"""Secrets never on a command line; secret-holding files private to their owner.

Every test runs the real CLI as a child process (``python -m appliance``), as
an operator or systemd would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from appliance_dev.exchange_process import stop_process
from tests.conftest import ACCOUNT_SID, API_KEY, API_SECRET, scaled

KEY_ARGS = ["--account-sid", ACCOUNT_SID, "--api-key", API_KEY]
URL = "ws://127.0.0.1:1/signal"
ARGV_SECRET = "hunter2-on-argv"
EXCHANGE_FILE = f"""
[[accounts]]
sid = "{ACCOUNT_SID}"

[[accounts.api_keys]]
sid = "{API_KEY}"
secret = "{API_SECRET}"
"""


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and stderr of ``appliance ARGS`` (no secret in the env)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    _, err = await asyncio.wait_for(process.communicate(), scaled(30))
    assert process.returncode is not None
    return process.returncode, err.decode()


def secret_file(tmp_path: Path, mode: int, text: str = API_SECRET) -> Path:
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("args", "instead"),
    [
        (["exchange", *KEY_ARGS, "--api-secret", ARGV_SECRET], "--api-secret-file"),
        (
            ["exchange", "--account-sid", ACCOUNT_SID, "--auth-token", ARGV_SECRET],
            "--auth-token-file",
        ),
        (
            ["token", *KEY_ARGS, "--identity", "a", "--api-secret", ARGV_SECRET],
            "--api-secret-file",
        ),
        (
            [
                "phone",
                "--signaling-url",
                "ws://127.0.0.1:1/signal",
                "--token",
                ARGV_SECRET,
            ],
            "--token-file",
        ),
        (
            [
                "sim",
                "--signaling-url",
                "ws://127.0.0.1:1/signal",
                "--token",
                ARGV_SECRET,
            ],
            "--token-file",
        ),
    ],
)
async def test_secret_options_are_refused_and_name_the_alternatives(args, instead):
    code, err = await run(*args)
    assert code == 2
    assert "visible to every user" in err
    assert instead in err and "$APPLIANCE_" in err
    assert ARGV_SECRET not in err  # the value is not echoed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
async def test_secret_file_open_to_others_is_refused_with_the_mode_needed(
    tmp_path, mode
):
    path = secret_file(tmp_path, mode)
    code, err = await run("exchange", *KEY_ARGS, "--api-secret-file", str(path))
    assert code == 2
    assert f"mode is {mode:04o}" in err and "needs mode 0600" in err
    assert f"chmod 600 {path}" in err


async def test_exchange_config_with_accounts_open_to_others_is_refused(tmp_path):
    path = tmp_path / "exchange.toml"
    path.write_text(EXCHANGE_FILE)
    path.chmod(0o644)
    code, err = await run("exchange", "--config", str(path))
    assert code == 2
    assert "config" in err and "needs mode 0600" in err
    assert API_SECRET not in err


async def test_missing_config_files_are_errors(tmp_path):
    missing = tmp_path / "missing.toml"
    code, err = await run("exchange", "--config", str(missing))
    assert code == 2 and "cannot read" in err and str(missing) in err
    code, err = await run("run", "--config", str(missing))
    assert code == 2 and "no such file" in err and str(missing) in err
    code, err = await run("show-config", "--config", str(missing))
    assert code == 2 and "no such file" in err
    # The provisioned layer may be absent until provisioning.
    code, err = await run("show-config", "--config-if-exists", str(missing))
    assert code == 0, err


async def test_phone_layer_with_a_turn_credential_must_be_private(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text(
        "[[device.rtc_configuration.ice_servers]]\n"
        'urls = "turn:127.0.0.1:3478"\nusername = "u"\ncredential = "hunter2"\n'
    )
    path.chmod(0o644)
    code, err = await run("show-config", "--config", str(path))
    assert code == 2 and "needs mode 0600" in err
    path.chmod(0o600)
    code, err = await run("show-config", "--config", str(path))
    assert code == 0, err


@pytest.mark.parametrize("source", ["file", "env", "config"])
async def test_exchange_starts_with_its_secret_off_the_command_line(tmp_path, source):
    env: dict[str, str] = {}
    args = ["exchange", "--listen", "127.0.0.1:0"]
    if source == "file":
        args += [*KEY_ARGS, "--api-secret-file", str(secret_file(tmp_path, 0o600))]
    elif source == "env":
        args += KEY_ARGS
        env["APPLIANCE_API_SECRET"] = API_SECRET
    else:
        path = tmp_path / "exchange.toml"
        path.write_text(EXCHANGE_FILE)
        path.chmod(0o600)
        args += ["--config", str(path)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **env},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), scaled(20))
        assert b"exchange listening on ws://127.0.0.1:" in line
        cmdline = await asyncio.to_thread(
            Path(f"/proc/{process.pid}/cmdline").read_bytes
        )
        assert API_SECRET.encode() not in cmdline
    finally:
        assert await stop_process(process) == 0
