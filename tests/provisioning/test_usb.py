"""USB-stick provisioning: signed files checked byte by byte, a directory as
the stick, and a phone that takes its identity from one while the provisioner
(a real process) hands it tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.provisioning.credential import (
    StoredCredential,
    load_credential,
    save_credential,
)
from appliance.provisioning.flow import Phase, ProvisioningView
from appliance.provisioning.phone import PhoneProvisioning, UsbSource, device_id
from appliance.provisioning.usb import (
    FILE_NAME,
    MAX_SIZE,
    UsbFileError,
    read_stick,
    sign_bundle,
    verify_bundle,
)
from appliance.tokens import describe_unverified
from tests.conftest import wait_until
from tests.provisioning.conftest import provisioner_config, start_provisioner

URL = "https://phones.example.com"
KEY = Ed25519PrivateKey.generate()


def bundle(key: Ed25519PrivateKey = KEY, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "provisioner_url": URL,
        "identity": "alice",
        "credential": "PH" + "1" * 32 + ".secret",
        "expires_at": 2000.0,
        "device_id": "",
    }
    fields.update(changes)
    return sign_bundle(key, **fields)  # type: ignore[arg-type]


def refused(data: bytes, *, now: float = 1000.0, device: str = "me") -> str:
    with pytest.raises(UsbFileError) as info:
        verify_bundle(
            data, KEY.public_key(), now=now, device_id=device, provisioner_url=URL
        )
    return info.value.short


def test_a_good_file_verifies():
    good = verify_bundle(
        bundle(device_id="me"),
        KEY.public_key(),
        now=1000.0,
        device_id="me",
        provisioner_url=URL + "/",
    )
    assert (good.identity, good.device_id) == ("alice", "me")
    assert "secret" not in repr(good)


def test_every_bad_file_is_refused_with_a_short_reason():
    assert refused(bundle(Ed25519PrivateKey.generate())) == "Bad signature"
    document = json.loads(bundle())
    payload = json.loads(base64.b64decode(document["payload"]))
    payload["identity"] = "mallory"
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    assert refused(json.dumps(document).encode()) == "Bad signature"
    assert refused(bundle(), now=2000.0) == "USB file expired"
    assert refused(bundle(device_id="other")) == "For another phone"
    assert refused(bundle(provisioner_url="https://evil.example")) == (
        "Other provisioner"
    )
    assert refused(b"{not json") == "Bad USB file"
    assert refused(b'{"payload": "***", "signature": ""}') == "Bad USB file"
    assert refused(b"[]") == "Bad USB file"
    assert refused(bundle(identity="")) == "Bad USB file"


def test_the_stick_is_read_safely(tmp_path: Path):
    assert read_stick(tmp_path) is None
    (tmp_path / "real.json").write_bytes(b"{}")
    (tmp_path / FILE_NAME).symlink_to(tmp_path / "real.json")
    with pytest.raises(UsbFileError, match="symlink"):
        read_stick(tmp_path)
    (tmp_path / FILE_NAME).unlink()
    os.mkfifo(tmp_path / FILE_NAME)  # would block a naive open()
    with pytest.raises(UsbFileError, match="not a regular file"):
        read_stick(tmp_path)
    (tmp_path / FILE_NAME).unlink()
    (tmp_path / FILE_NAME).write_bytes(b" " * (MAX_SIZE + 1))
    with pytest.raises(UsbFileError, match="too large"):
        read_stick(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"{}")
    assert read_stick(tmp_path) == b"{}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "provisioner", *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def test_a_phone_takes_its_identity_from_a_stick(tmp_path: Path):
    public = cli("make-signing-key", str(tmp_path / "usb-key.pem"))
    assert public.returncode == 0, public.stderr
    assert (tmp_path / "usb-key.pem").stat().st_mode & 0o777 == 0o600
    (tmp_path / "usb-key.pub").write_text(public.stdout)
    prov = await start_provisioner(provisioner_config(tmp_path))
    stick = tmp_path / "stick"
    stick.mkdir()
    (tmp_path / "machine-id").write_text("phone-0001\n")
    # The phone already holds a credential (from an earlier enrollment).
    old = StoredCredential("PH" + "0" * 32 + ".old", "old-name", prov.url)
    credential_file = tmp_path / "phone" / "credential"
    save_credential(credential_file, old)
    tokens: list[str] = []
    views: list[ProvisioningView] = []
    statuses: list[str] = []

    async def apply(token: str) -> None:
        tokens.append(token)

    phone = PhoneProvisioning(
        prov.url,
        credential_file,
        stick=UsbSource(stick, tmp_path / "usb-key.pub", (tmp_path / "machine-id",)),
        apply_token=apply,
        show=views.append,
        status=statuses.append,
    )
    task = asyncio.get_running_loop().create_task(phone.run())
    try:
        # The old credential is unknown to this provisioner: refused.
        await wait_until(lambda: phone.phase is Phase.REJECTED, 10.0)

        # A stick for another phone: refused, the credential file untouched.
        config = tmp_path / "make-usb.toml"
        text = (tmp_path / "provisioner.toml").read_text()
        public_url = f'[provisioner]\npublic_url = "{prov.url}"\n'
        config.write_text(text.replace("[provisioner]\n", public_url, 1))
        for device_id, identity in (("phone-0002", "mallory"), ("phone-0001", "bob")):
            made = cli(
                "make-usb",
                "--config",
                str(config),
                "--key",
                str(tmp_path / "usb-key.pem"),
                "--identity",
                identity,
                "--device-id",
                device_id,
                "--out",
                str(stick),
            )
            assert made.returncode == 0, made.stderr
            if identity == "mallory":
                await wait_until(lambda: "USB: For another phone" in statuses, 10.0)
                assert load_credential(credential_file) == old
        # The right stick: saved, token fetched, handed to the Device.
        await wait_until(lambda: tokens, 10.0)
        claims = describe_unverified(tokens[-1])["claims"]
        assert claims["grants"]["identity"] == "bob"
        stored = load_credential(credential_file)
        assert stored is not None and stored.identity == "bob"
        assert "USB: provisioned as bob" in statuses
        assert phone.phase is Phase.READY
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await prov.stop()


def test_the_device_id_comes_from_the_board_before_the_machine_id(tmp_path: Path):
    # A Pi's device tree serial ends in a NUL; the image's machine id changes
    # at each boot, so the board's serial must win when both are there.
    serial = tmp_path / "serial-number"
    uuid = tmp_path / "product_uuid"
    machine = tmp_path / "machine-id"
    machine.write_text("0123456789abcdef0123456789abcdef\n")
    paths = (serial, uuid, machine)
    assert device_id(paths) == "0123456789abcdef0123456789abcdef"
    uuid.write_text("4C4C4544-0042-3510-8050-B4C04F4E3132\n")
    assert device_id(paths) == "4c4c4544-0042-3510-8050-b4c04f4e3132"
    serial.write_bytes(b"10000000a1b2c3d4\x00")
    assert device_id(paths) == "10000000a1b2c3d4"
    serial.write_bytes(b"\x00")  # empty: the next source
    assert device_id(paths) == "4c4c4544-0042-3510-8050-b4c04f4e3132"
    assert device_id((tmp_path / "absent",)) == ""
