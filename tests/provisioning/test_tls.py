"""HTTPS between phone and provisioner: a test CA on 127.0.0.1; the phone
trusts the provisioner only through the CA it was given."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.errors import ConfigError
from appliance.provisioning.config import load_provisioner_config
from appliance.provisioning.flow import Phase, ProvisioningView
from appliance.provisioning.phone import PhoneProvisioning
from tests.conftest import wait_until
from tests.provisioning.conftest import provisioner_config, start_provisioner


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_server(directory: Path) -> Path:
    """Write ca.pem, cert.pem and key.pem (0600) for 127.0.0.1; return ca.pem."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test provisioning CA"))
        .issuer_name(_name("test provisioning CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "key.pem").chmod(0o600)
    return directory / "ca.pem"


TLS = 'tls_cert_file = "cert.pem"\ntls_key_file = "key.pem"'


async def run_phone(url: str, tmp_path: Path, ca_file: Path | None):
    views: list[ProvisioningView] = []

    async def apply(_token: str) -> None:
        raise AssertionError("no token before approval")

    client = PhoneProvisioning(
        url,
        tmp_path / "credential",
        ca_file=ca_file,
        apply_token=apply,
        show=views.append,
        status=lambda _s: None,
    )
    task = asyncio.get_running_loop().create_task(client.run())
    return client, views, task


async def test_the_phone_trusts_the_provisioner_through_its_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    ca = make_ca_and_server(tmp_path)
    prov = await start_provisioner(provisioner_config(tmp_path, tls=TLS))
    try:
        assert prov.url.startswith("https://127.0.0.1:")
        client, views, task = await run_phone(prov.url, tmp_path, ca)
        try:
            await wait_until(lambda: client.phase is Phase.WAITING_APPROVAL, 10.0)
            assert views[-1].uri.startswith(f"{prov.url}/device?user_code=")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        # Without the CA (system CAs only), the certificate is refused.
        caplog.set_level(logging.WARNING, "appliance.provisioning.phone")
        client, views, task = await run_phone(prov.url, tmp_path, None)
        try:
            await wait_until(
                lambda: "TLS certificate is not trusted" in caplog.text, 10.0
            )
            assert client.phase is Phase.REQUESTING_CODE
            assert views[-1].message == "TLS certificate not trusted"
            assert "error 20151:" in caplog.text
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await prov.stop()


def test_tls_key_must_be_private_and_paired(tmp_path: Path):
    make_ca_and_server(tmp_path)
    path = provisioner_config(tmp_path, tls=TLS)
    assert load_provisioner_config(path).tls_key_file == tmp_path / "key.pem"
    (tmp_path / "key.pem").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_provisioner_config(path)
    path = provisioner_config(tmp_path, tls='tls_cert_file = "cert.pem"')
    with pytest.raises(ConfigError, match="both TLS files"):
        load_provisioner_config(path)
