"""The provisioner as a real process on 127.0.0.1: the device grant, tokens,
the admin API and commands, and its configuration."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from appliance.errors import ConfigError
from appliance.provisioning.config import load_provisioner_config
from appliance.provisioning.server import DEVICE_GRANT_TYPE
from appliance.tokens import Keyring, verify_token
from tests.conftest import ACCOUNT_SID, API_KEY, API_SECRET, APP_SID
from tests.provisioning.conftest import (
    ADMIN_PASSWORD,
    ProvisionerProcess,
    provisioner_config,
    write_secret,
)


def client() -> aiohttp.ClientSession:
    # The default jar keeps no cookies of IP-address hosts such as 127.0.0.1.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def post(session: aiohttp.ClientSession, url: str, **kw: Any):
    async with session.post(url, **kw) as response:
        return response.status, await response.json()


async def enroll(
    p: ProvisionerProcess, session: aiohttp.ClientSession, identity: str
) -> str:
    """Run the device grant for ``identity``; return the device credential."""
    status, auth = await post(session, f"{p.url}/api/device/authorize")
    assert status == 200
    csrf = await p.admin(session)
    status, _ = await post(
        session,
        f"{p.url}/api/admin/approve",
        json={"user_code": auth["user_code"], "identity": identity, "name": "Desk"},
        headers={"X-CSRF-Token": csrf},
    )
    assert status == 200
    status, body = await post(
        session,
        f"{p.url}/api/device/token",
        data={"grant_type": DEVICE_GRANT_TYPE, "device_code": auth["device_code"]},
    )
    assert status == 200, body
    return str(body["access_token"])


async def test_device_grant_enrolls_a_phone_that_then_gets_access_tokens(
    provisioner: ProvisionerProcess,
):
    async with client() as session:
        status, auth = await post(session, f"{provisioner.url}/api/device/authorize")
        assert status == 200
        assert set(auth) == {
            "device_code",
            "user_code",
            "verification_uri",
            "verification_uri_complete",
            "expires_in",
            "interval",
        }
        assert auth["verification_uri"] == f"{provisioner.url}/device"
        assert auth["verification_uri_complete"].endswith(auth["user_code"])
        poll = {"grant_type": DEVICE_GRANT_TYPE, "device_code": auth["device_code"]}
        status, body = await post(
            session, f"{provisioner.url}/api/device/token", data=poll
        )
        assert (status, body["error"]) == (400, "authorization_pending")
        status, body = await post(
            session, f"{provisioner.url}/api/device/token", data=poll
        )
        assert (status, body["error"]) == (400, "slow_down")

        csrf = await provisioner.admin(session)
        status, body = await post(
            session,
            f"{provisioner.url}/api/admin/approve",
            json={"user_code": auth["user_code"], "identity": "alice", "name": "A"},
            headers={"X-CSRF-Token": csrf},
        )
        assert status == 200, body
        status, body = await post(
            session, f"{provisioner.url}/api/device/token", data=poll
        )
        assert status == 200, body
        assert body["identity"] == "alice"
        credential = body["access_token"]

        status, body = await post(
            session,
            f"{provisioner.url}/api/token",
            headers={"Authorization": f"Bearer {credential}"},
        )
    assert status == 200, body
    keyring = Keyring()
    keyring.add_api_key(ACCOUNT_SID, API_KEY, API_SECRET)
    claims = verify_token(body["token"], keyring, now=time.time())
    assert claims.identity == "alice"
    assert claims.incoming_allowed
    assert claims.outgoing_application_sid == APP_SID
    assert 3590 <= claims.expires_at - time.time() <= 3600
    header = jwt.get_unverified_header(body["token"])
    assert header["cty"] == "twilio-fpa;v=1"
    # The credential is not in the database, only its hash.
    db = (provisioner.config.parent / "phones.db").read_bytes()
    assert credential.split(".")[1].encode() not in db
    assert credential.split(".")[1] not in "".join(provisioner.stderr)


async def test_a_revoked_phone_gets_403_and_no_token(provisioner: ProvisionerProcess):
    async with client() as session:
        credential = await enroll(provisioner, session, "bob")
        sid = credential.split(".")[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "provisioner",
            "revoke",
            "--config",
            str(provisioner.config),
            sid,
        )
        assert await proc.wait() == 0
        status, body = await post(
            session,
            f"{provisioner.url}/api/token",
            headers={"Authorization": f"Bearer {credential}"},
        )
        assert (status, body["error"], body["code"]) == (403, "phone_revoked", 20403)
        assert "token" not in body
        async with session.get(f"{provisioner.url}/api/admin/phones") as response:
            phones = await response.json()
    assert [(p["sid"], p["identity"], p["revoked"]) for p in phones] == [
        (sid, "bob", True)
    ]


async def test_bad_requests_get_clear_errors(provisioner: ProvisionerProcess):
    url = provisioner.url
    async with client() as session:
        status, body = await post(
            session,
            f"{url}/api/token",
            headers={"Authorization": "Bearer PH" + "0" * 32 + ".nope"},
        )
        assert (status, body["error"], body["code"]) == (401, "invalid_client", 20003)
        status, body = await post(session, f"{url}/api/token")
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await post(
            session, f"{url}/api/device/token", data={"grant_type": "password"}
        )
        assert (status, body["error"]) == (400, "unsupported_grant_type")
        status, body = await post(
            session,
            f"{url}/api/device/token",
            data={"grant_type": DEVICE_GRANT_TYPE, "device_code": "forged"},
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        # Admin actions need a login and the session's CSRF token.
        async with session.post(
            f"{url}/api/admin/approve", json={"user_code": "BCDF-GHJK"}
        ) as response:
            assert response.status == 403
        await provisioner.admin(session)
        async with session.post(
            f"{url}/api/admin/approve",
            json={"user_code": "BCDF-GHJK", "identity": "x"},
            headers={"X-CSRF-Token": "forged"},
        ) as response:
            assert response.status == 403


async def test_logins_are_rate_limited(provisioner: ProvisionerProcess):
    url = f"{provisioner.url}/api/admin/login"
    async with client() as session:
        statuses = []
        for _ in range(6):
            status, body = await post(session, url, json={"password": "guess"})
            statuses.append(status)
        assert statuses == [401] * 5 + [429]
        status, body = await post(session, url, json={"password": ADMIN_PASSWORD})
        assert (status, body["code"]) == (429, 20429)


async def test_admin_commands_list_and_rename(provisioner: ProvisionerProcess):
    async with client() as session:
        credential = await enroll(provisioner, session, "carol")
    sid = credential.split(".")[0]

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "provisioner",
            *args,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    config = str(provisioner.config)
    assert (await run("rename", "--config", config, sid, "Front desk"))[0] == 0
    status, out = await run("phones", "--config", config)
    assert status == 0
    assert sid in out and "carol" in out and "Front desk" in out and "active" in out
    assert (await run("revoke", "--config", config, "PH" + "9" * 32))[0] == 2


def test_config_secrets_come_only_from_private_files(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("APPLIANCE_PROVISIONER_API_SECRET", raising=False)
    monkeypatch.delenv("APPLIANCE_PROVISIONER_ADMIN_HASH", raising=False)
    path = provisioner_config(tmp_path)
    config = load_provisioner_config(path)
    assert config.api_key_secret.reveal() == API_SECRET
    assert API_SECRET not in repr(config)
    (tmp_path / "api-secret").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        load_provisioner_config(path)
    assert info.value.key == "twilio.api_key_secret_file"
    monkeypatch.setenv("APPLIANCE_PROVISIONER_API_SECRET", "from-the-environment")
    assert load_provisioner_config(path).api_key_secret.reveal() == (
        "from-the-environment"
    )
    write_secret(tmp_path / "admin-hash", "plain text password")
    with pytest.raises(ConfigError, match="hash-password"):
        load_provisioner_config(path)


def test_config_reports_every_problem(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[provisioner]\ntoken_ttl = 999999\nlisten = "nowhere"\ncolour = 1\n'
        '[twilio]\naccount_sid = "AC1"\napi_key_sid = "SK' + "2" * 32 + '"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_provisioner_config(path)
    keys = {key for key, _ in info.value.problems}
    assert keys == {"provisioner.token_ttl", "provisioner.colour"}
    path.write_text(
        '[provisioner]\nlisten = "nowhere"\n'
        '[twilio]\naccount_sid = "AC1"\napi_key_sid = "SK' + "2" * 32 + '"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_provisioner_config(path)
    keys = {key for key, _ in info.value.problems}
    assert keys == {
        "twilio.account_sid",
        "provisioner.listen",
        "twilio.api_key_secret_file",
        "admin.password_hash_file",
    }
