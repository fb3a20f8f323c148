"""x509pop payloads an attacker sends to make a server spend: reliability case 13's size limits.

Shared by the abuse tests, which check each is refused cheaply, and by the benchmark that
measures legitimate attestations while they pour in.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.plugin.test_x509pop import node_certificate
from tests.support.pki import Issued, make_ca

__all__ = ["oversized_chain_payload", "oversized_rsa_leaf_payload"]


def _payload(certificates: list[bytes]) -> bytes:
    return json.dumps({"certificates": [base64.b64encode(der).decode() for der in certificates]}).encode()


def oversized_chain_payload(root: Issued, intermediates: int = 1000) -> bytes:
    """A node certificate of ``root`` followed by ``intermediates`` copies of an intermediate."""
    intermediate = make_ca(issuer=root, name="intermediate").certificate.public_bytes(serialization.Encoding.DER)
    leaf = node_certificate(root).certificate.public_bytes(serialization.Encoding.DER)
    return _payload([leaf] + [intermediate] * intermediates)


def oversized_rsa_leaf_payload(root: Issued) -> bytes:
    """A node certificate signed by ``root`` whose RSA key has 16,384 bits.

    Only its public half matters to the server, so the modulus is a random odd number of that
    length: generating a real 16k-bit key would take minutes.
    """
    modulus = int.from_bytes(os.urandom(16384 // 8), "big") | (1 << 16383) | 1
    public_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    start = datetime.now(UTC) - timedelta(minutes=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "huge")]))
        .issuer_name(root.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return _payload([certificate.public_bytes(serialization.Encoding.DER)])
