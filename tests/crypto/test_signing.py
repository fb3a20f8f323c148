"""Certificates, CSRs and JWTs signed through a KeyManager verify with openssl and PyJWT."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspire.crypto import CsrError, KeyManagerSigner, LocalSigner, build_csr, parse_csr, sign_certificate, sign_jwt
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.keys import KeyType
from pyspire.plugin.testing import load_plugin, make_core_config


@pytest.fixture
def key_manager(tmp_path: Path) -> Iterator[KeyManager]:
    handle = load_plugin(
        "server", "KeyManager", "disk", {"keys_path": str(tmp_path / "keys.json")}, make_core_config(tmp_path)
    )
    assert isinstance(handle, KeyManager)
    yield handle
    handle.close()


def _ca_builder(public_key: object) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "pyspire test CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(seconds=10))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_certificate_signed_in_the_key_manager_verifies_with_openssl(
    key_manager: KeyManager, key_type: KeyType, tmp_path: Path
) -> None:
    signer = KeyManagerSigner(key_manager, key_manager.generate_key("x509-CA-A", key_type))
    certificate = sign_certificate(_ca_builder(signer.public_key), signer)
    certificate.verify_directly_issued_by(certificate)
    pem = tmp_path / "ca.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-check_ss_sig", "-CAfile", str(pem), str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_csr_signed_in_the_key_manager_is_accepted_by_openssl_and_parse_csr(
    key_manager: KeyManager, key_type: KeyType, tmp_path: Path
) -> None:
    signer = KeyManagerSigner(key_manager, key_manager.generate_key("agent-svid-A", key_type))
    der = build_csr(signer)
    path = tmp_path / "req.der"
    path.write_bytes(der)
    result = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-in", str(path), "-verify", "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        parse_csr(der).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == key_manager.get_public_key("agent-svid-A").der
    )  # type: ignore[union-attr]


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_jwt_signed_in_the_key_manager_validates_with_pyjwt(key_manager: KeyManager, key_type: KeyType) -> None:
    signer = KeyManagerSigner(key_manager, key_manager.generate_key("JWT-Signer-A", key_type))
    token = sign_jwt({"sub": "spiffe://example.org/w", "aud": ["db"], "exp": 4102444800}, signer, "kid-1")
    header = jwt.get_unverified_header(token)
    assert header == {
        "alg": {KeyType.EC_P256: "ES256", KeyType.EC_P384: "ES384"}.get(key_type, "RS256"),
        "kid": "kid-1",
        "typ": "JWT",
    }
    claims = jwt.decode(token, signer.public_key, algorithms=[header["alg"]], audience="db")  # type: ignore[arg-type]
    assert claims["sub"] == "spiffe://example.org/w"


def _csr(key: object, hash_algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hash_algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def test_csr_with_a_bad_signature_is_refused() -> None:
    der = bytearray(_csr(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    der[-3] ^= 0xFF
    with pytest.raises(CsrError, match=r"signature does not verify|cannot be parsed"):
        parse_csr(bytes(der))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "curve secp521r1 is not allowed"),
        (ed25519.Ed25519PrivateKey.generate(), "key type Ed25519PublicKey is not allowed"),
        (rsa.generate_private_key(65537, 1024), r"1024 bits"),
    ],
)
def test_csr_key_types_are_restricted(key: object, message: str) -> None:
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    with pytest.raises(CsrError, match=message):
        parse_csr(_csr(key, digest))


def test_huge_and_empty_csrs_are_refused_before_parsing() -> None:
    with pytest.raises(CsrError, match="at most 16384"):
        parse_csr(b"\x30" * 20000)
    with pytest.raises(CsrError, match="empty"):
        parse_csr(b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_parse_csr_raises_only_csr_errors(data: bytes) -> None:
    with contextlib.suppress(CsrError):
        parse_csr(data)


def test_local_signer_matches_key_manager_signer_output_format() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = LocalSigner(key)
    certificate = sign_certificate(_ca_builder(key.public_key()), signer)
    certificate.verify_directly_issued_by(certificate)
