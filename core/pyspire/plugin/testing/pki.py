"""Certificates for contract suites: a test CA, X509-SVIDs signed by it, CSRs, bundles.

Made with ``cryptography`` from fresh P-256 keys; integrators may use them in their own tests
(a fake service that must return a bundle, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe import Bundle, SpiffeId, TrustDomain, X509Svid

__all__ = ["CA_SUBJECT", "TestCa", "make_bundle", "make_csr"]

CA_SUBJECT = x509.Name(
    [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]
)
"""SPIRE's default ``ca_subject``."""

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*enabled: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{flag: flag in enabled for flag in _KEY_USAGE_FLAGS})


@dataclass
class TestCa:
    """A self-signed CA of a trust domain that signs X509-SVIDs."""

    __test__ = False  # not a pytest test class, whatever its name

    trust_domain: TrustDomain
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, trust_domain: TrustDomain, lifetime: timedelta = timedelta(days=1)) -> TestCa:
        """A new CA valid from a minute ago for ``lifetime``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{trust_domain.name} test CA")])
        start = datetime.now(UTC) - timedelta(minutes=1)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.id_string())]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(trust_domain, certificate, key)

    def bundle(self, *others: x509.Certificate) -> Bundle:
        """A bundle of this CA (and ``others``) with one JWT authority."""
        return make_bundle(self.trust_domain, (self.certificate, *others))

    def svid(self, path: str, lifetime: timedelta = timedelta(hours=1)) -> X509Svid:
        """An X509-SVID for ``spiffe://<td><path>`` with a fresh key."""
        key = ec.generate_private_key(ec.SECP256R1())
        spiffe_id = SpiffeId.from_path(self.trust_domain, path)
        start = datetime.now(UTC) - timedelta(seconds=10)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(min(start + lifetime, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage("digital_signature", "key_encipherment", "key_agreement"), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return X509Svid.from_parts([leaf], key)


def make_bundle(
    trust_domain: TrustDomain, roots: Sequence[x509.Certificate], jwt_key_id: str = "contract-key"
) -> Bundle:
    """A bundle with ``roots`` and one fresh EC JWT authority named ``jwt_key_id``."""
    return Bundle(
        trust_domain, roots, {jwt_key_id: ec.generate_private_key(ec.SECP256R1()).public_key()}, sequence_number=1
    )


def make_csr(trust_domain: TrustDomain) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A DER PKCS#10 request (and its key) as the server's CA makes one for its upstream.

    The subject is SPIRE's default CA subject and the one URI SAN the trust domain's ID.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return build_csr(LocalSigner(key), CA_SUBJECT, trust_domain.id_string()), key
