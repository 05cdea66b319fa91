"""The web page's TLS key and self-signed certificate, made on first start.

The session cookie is ``Secure``, and the password crosses the office LAN, so
the page is served over HTTPS only. A phone has no name a public CA would
certify, so it makes its own key (ECDSA P-256) and a self-signed certificate
the first time the page starts, and keeps both in its state directory: the
browser warns once, and the owner can compare the SHA-256 fingerprint the
status page shows (and the journal logs) with the one the browser shows.
An existing pair is never replaced, so that an accepted exception holds.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.files import write_atomic

__all__ = ["CERT_NAME", "KEY_NAME", "fingerprint", "load_or_create"]

KEY_NAME = "web-key.pem"
CERT_NAME = "web-cert.pem"
_VALID_DAYS = 3650


def load_or_create(directory: Path) -> tuple[Path, Path]:
    """The (certificate, key) files in ``directory``, made if missing.

    Blocking (file I/O and key generation): call it off the event loop.

    Raises:
        OSError: the directory is not writable.
    """
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if cert.exists() and key.exists():
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "phone"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.DNSName(f"{host}.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    write_atomic(
        key,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    write_atomic(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert, key


def fingerprint(cert: Path) -> str:
    """The certificate's SHA-256 fingerprint, as browsers show it (AA:BB:...)."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    return loaded.fingerprint(hashes.SHA256()).hex(":").upper()
