"""A USB file pins the provisioner's key: a real HTTPS provisioner process on
127.0.0.1 with a test CA the phone does not otherwise trust; the right pin
provisions the phone (and its Wi-Fi), a wrong one is refused with its code
and the working credential stays."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.provisioning.credential import load_credential
from appliance.provisioning.flow import Phase, ProvisioningView
from appliance.provisioning.phone import PhoneProvisioning, UsbSource
from appliance.provisioning.trust import (
    PIN_MISMATCH,
    PinMismatchError,
    client_context,
    spki_pin,
)
from appliance.provisioning.usb import UsbFileError, sign_bundle, verify_bundle
from appliance.provisioning.wifi import FILE_NAME as WIFI_FILE
from appliance.provisioning.wifi import WifiNetwork, derive_psk
from appliance.tokens import describe_unverified
from tests.conftest import wait_until
from tests.provisioning.conftest import provisioner_config, start_provisioner
from tests.provisioning.test_tls import TLS, make_ca_and_server

WRONG_PIN = "sha256/" + base64.b64encode(hashlib.sha256(b"not it").digest()).decode()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "provisioner", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def cert_pin(path: Path) -> str:
    return spki_pin(ssl.PEM_cert_to_DER_cert(path.read_text()))


async def test_a_pinned_provisioner_and_a_wrong_pin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    make_ca_and_server(tmp_path)
    public = cli("make-signing-key", str(tmp_path / "usb-key.pem"))
    assert public.returncode == 0, public.stderr
    (tmp_path / "usb-key.pub").write_text(public.stdout)
    prov = await start_provisioner(provisioner_config(tmp_path, tls=TLS))
    config = tmp_path / "make-usb.toml"
    config.write_text(
        (tmp_path / "provisioner.toml")
        .read_text()
        .replace("[provisioner]\n", f'[provisioner]\npublic_url = "{prov.url}"\n', 1)
    )
    (tmp_path / "wifi-pass").write_text("correct horse battery\n")
    (tmp_path / "wifi-pass").chmod(0o600)
    stick = tmp_path / "stick"
    stick.mkdir()
    state = tmp_path / "state"
    credential_file = state / "device-credential"
    (tmp_path / "machine-id").write_text("phone-0001\n")
    tokens: list[str] = []
    views: list[ProvisioningView] = []
    statuses: list[str] = []

    async def apply(token: str) -> None:
        tokens.append(token)

    def make_usb(identity: str, *pin: str) -> None:
        made = cli(
            "make-usb",
            *("--config", str(config), "--key", str(tmp_path / "usb-key.pem")),
            *("--identity", identity, "--out", str(stick)),
            *(
                "--wifi-ssid",
                "Office 2.4",
                "--wifi-psk-file",
                str(tmp_path / "wifi-pass"),
            ),
            *pin,
        )
        assert made.returncode == 0, made.stderr
        assert "correct horse" not in made.stdout + made.stderr

    caplog.set_level(logging.INFO, "appliance.provisioning")
    # No CA given: the system CAs do not know the test CA; only a pin helps.
    phone = PhoneProvisioning(
        prov.url,
        credential_file,
        stick=UsbSource(
            stick, tmp_path / "usb-key.pub", (tmp_path / "machine-id",), wifi_dir=state
        ),
        apply_token=apply,
        show=views.append,
        status=statuses.append,
    )
    task = asyncio.get_running_loop().create_task(phone.run())
    try:
        await wait_until(lambda: "TLS certificate is not trusted" in caplog.text, 10)
        assert phone.phase is Phase.REQUESTING_CODE
        assert views[-1].message == "TLS certificate not trusted"

        # The right pin (of the provisioner's certificate): provisioned.
        make_usb("bob", "--pin-cert", str(tmp_path / "cert.pem"))
        await wait_until(lambda: tokens, 15)
        assert describe_unverified(tokens[-1])["claims"]["grants"]["identity"] == "bob"
        good = load_credential(credential_file)
        assert good is not None and good.identity == "bob"
        assert good.pin == cert_pin(tmp_path / "cert.pem") and not good.ca_pem
        assert credential_file.stat().st_mode & 0o777 == 0o600
        wifi = state / WIFI_FILE
        assert wifi.stat().st_mode & 0o777 == 0o600
        text = wifi.read_text()
        assert f"ssid={b'Office 2.4'.hex()}\n" in text
        assert f"psk={derive_psk('Office 2.4', 'correct horse battery')}\n" in text
        assert "correct horse" not in text

        # A wrong pin: refused with its code; the working credential stays.
        wifi.unlink()
        make_usb("carol", "--pin", WRONG_PIN)
        await wait_until(lambda: "USB: TLS pin mismatch" in statuses, 15)
        assert PIN_MISMATCH in caplog.text
        assert load_credential(credential_file) == good
        assert not wifi.exists()  # nothing from a refused file is applied
        before = len(tokens)
        phone.token_will_expire()
        await wait_until(lambda: len(tokens) > before, 15)
        assert describe_unverified(tokens[-1])["claims"]["grants"]["identity"] == "bob"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await prov.stop()


async def test_a_pin_is_checked_before_any_request_is_sent(tmp_path: Path):
    """With the CA and a wrong pin, the handshake itself fails: both must hold."""
    ca = make_ca_and_server(tmp_path)
    prov = await start_provisioner(provisioner_config(tmp_path, tls=TLS))
    try:
        port = int(prov.url.rsplit(":", 1)[1])
        right = cert_pin(tmp_path / "cert.pem")
        context = client_context(ca_pem=ca.read_text(), pin=right)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.close()
        await writer.wait_closed()
        context = client_context(ca_pem=ca.read_text(), pin=WRONG_PIN)
        with pytest.raises(PinMismatchError) as info:
            await asyncio.open_connection("127.0.0.1", port, ssl=context)
        assert info.value.code == PIN_MISMATCH and info.value.got == right
    finally:
        await prov.stop()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"pin": "sha256/short"}, "a pin is"),
        ({"pin": "md5/" + "A" * 44}, "a pin is"),
        ({"ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n"}, "not PEM"),
        ({"ca_pem": "x" * 9000}, "ca_pem"),
        ({"wifi": WifiNetwork("Office", "not hex")}, "64 lower-case hex"),
    ],
)
def test_bad_trust_or_wifi_in_a_signed_file_is_refused(extra: dict[str, Any], why: str):
    key = Ed25519PrivateKey.generate()
    data = sign_bundle(
        key,
        provisioner_url="https://p",
        identity="alice",
        credential="PH1.secret",
        expires_at=2000.0,
        **extra,
    )
    with pytest.raises(UsbFileError, match=why) as info:
        verify_bundle(
            data,
            key.public_key(),
            now=1000.0,
            device_id="",
            provisioner_url="https://p",
        )
    assert info.value.short == "Bad USB file"
