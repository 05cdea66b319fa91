"""How the phone decides to trust the provisioner's TLS certificate.

Three sources, in this order: a CA bundle and/or a certificate pin that came
with the credential (a signed USB file carries them, and they are stored in
the credential file so that they change together with the credential), then
``phone.provisioner_ca_file``, then the system's CAs.

A pin is the SHA-256 of the certificate's SubjectPublicKeyInfo, written
``sha256/<base64>`` (the form of RFC 7469's ``pin-sha256``). It is checked
inside the TLS handshake, before a single byte of a request (which may carry
the device credential) is sent: :func:`client_context` installs an
:class:`ssl.SSLObject` subclass whose ``do_handshake`` compares the peer's
key once the handshake is done and fails the connection otherwise
(``ssl.SSLContext.sslobject_class`` is the documented hook for this). With a
pin and a CA, both must hold; with a pin alone, the chain and name are not
checked, only the key (a provisioner with a self-signed certificate). A
mismatch is a :class:`PinMismatchError`, code :data:`PIN_MISMATCH`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.errors import ProvisioningError

__all__ = [
    "PIN_MISMATCH",
    "PinMismatchError",
    "check_ca_pem",
    "client_context",
    "parse_pin",
    "spki_pin",
]

logger = logging.getLogger(__name__)

#: The error code of a certificate whose key is not the pinned one.
PIN_MISMATCH = "tls_pin_mismatch"
_PREFIX = "sha256/"
#: A CA bundle on a USB file: a few certificates at most.
MAX_CA_PEM = 8192


class PinMismatchError(ssl.SSLCertVerificationError):
    """The provisioner's key is not the pinned one (raised in the handshake).

    An :class:`ssl.SSLCertVerificationError`, so the HTTP client reports it
    as an untrusted certificate, never as a network fault to ignore.
    """

    code = PIN_MISMATCH

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(
            f"{PIN_MISMATCH}: the provisioner's key is {got}, pinned {expected}"
        )
        self.expected = expected
        self.got = got


def spki_pin(certificate_der: bytes) -> str:
    """The ``sha256/<base64>`` pin of a DER certificate's public key."""
    cert = x509.load_der_x509_certificate(certificate_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _PREFIX + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def parse_pin(text: str) -> str:
    """Check a pin's form; return it normalised.

    Raises:
        ProvisioningError: not ``sha256/`` and the base64 of 32 bytes.
    """
    if not text.startswith(_PREFIX):
        raise ProvisioningError("a pin is sha256/<base64 of 32 bytes>")
    try:
        digest = base64.b64decode(text[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProvisioningError("a pin is sha256/<base64 of 32 bytes>") from exc
    if len(digest) != 32:
        raise ProvisioningError("a pin is sha256/<base64 of 32 bytes>")
    return _PREFIX + base64.b64encode(digest).decode()


def check_ca_pem(text: str) -> str:
    """Check that ``text`` is one or more PEM certificates; return it.

    Raises:
        ProvisioningError: too large, or no certificate in it.
    """
    if len(text) > MAX_CA_PEM:
        raise ProvisioningError("the CA bundle is too large")
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise ProvisioningError("the CA bundle is not PEM certificates") from exc
    if not certificates:
        raise ProvisioningError("the CA bundle holds no certificate")
    return text


def client_context(
    *, ca_file: Path | None = None, ca_pem: str = "", pin: str = ""
) -> ssl.SSLContext:
    """The TLS context for requests to the provisioner.

    Args:
        ca_file: ``phone.provisioner_ca_file`` (used when ``ca_pem`` is empty).
        ca_pem: CA certificates that came with the credential.
        pin: ``sha256/<base64>`` of the provisioner's key, or "".

    A CA file that cannot be read leaves the phone trusting nothing (every
    request fails and is logged), never everything.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies name and chain
    try:
        if ca_pem:
            context.load_verify_locations(cadata=ca_pem)
        elif ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        elif not pin:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        logger.error("cannot read the provisioner's CA: %s", exc)
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts nothing
    if pin:
        if not ca_pem and ca_file is None:
            # The pin alone: the key is what is trusted, not a chain or a name.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslobject_class = _pinned_object_class(pin)
    return context


def _pinned_object_class(pin: str) -> type[ssl.SSLObject]:
    class _PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until done
            der = self.getpeercert(binary_form=True)
            got = spki_pin(der) if der else "no certificate"
            if got != pin:
                raise PinMismatchError(pin, got)

    return _PinnedSSLObject
