"""``appliance provision status``: what the person at the phone sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.provisioning.credential import (
    StoredCredential,
    load_credential,
    save_credential,
)

SECRET = "f" * 64


def status(config: Path) -> tuple[int, str]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "appliance", "provision", "status"),
            *("--config", config, "--socket", config.with_name("none.sock")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_status_through_the_phone_s_life(tmp_path: Path):
    credential = tmp_path / "credential"
    config = tmp_path / "appliance.toml"
    config.write_text(
        '[phone]\nprovisioner_url = "https://phones.example.com"\n'
        f'credential_file = "{credential}"\n'
    )
    assert status(config) == (
        0,
        "provisioner: https://phones.example.com\n"
        f"credential file: {credential}\n"
        "state: waiting for provisioning (no credential yet)\n"
        f"service: not reachable at {config.with_name('none.sock')}\n",
    )
    stored = StoredCredential(
        "PH" + "a" * 32 + "." + SECRET, "alice", "https://phones.example.com"
    )
    save_credential(credential, stored)
    assert credential.stat().st_mode & 0o777 == 0o600
    assert load_credential(credential) == stored
    code, out = status(config)
    assert code == 0
    assert "provisioned as alice" in out and "PH" + "a" * 32 in out
    assert SECRET not in out and SECRET not in repr(stored)
    credential.chmod(0o644)
    code, out = status(config)
    assert code == 1 and "chmod 600" in out
    code, out = status(tmp_path / "missing.toml")
    assert code != 0 and "missing.toml: no such file" in out


def test_a_garbled_credential_file_is_reported_not_trusted(tmp_path: Path):
    credential = tmp_path / "credential"
    credential.write_text("{not json")
    credential.chmod(0o600)
    config = tmp_path / "appliance.toml"
    config.write_text(
        '[phone]\nprovisioner_url = "http://127.0.0.1:1"\n'
        f'credential_file = "{credential}"\n'
    )
    code, out = status(config)
    assert code == 1 and "not a credential file" in out
    config.write_text('[phone]\nprovisioner_url = "ftp://x"\n')
    code, out = status(config)
    assert code == 2 and "phone.provisioner_url" in out
