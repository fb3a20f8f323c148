"""An upstream CA kept as PEM: its certificate chain, its private key and the roots above it.

The ``disk`` and ``awssecret`` UpstreamAuthorities keep their CA so, read from files or from
secrets; a plugin reading one from another store does the same. :func:`load_pem_upstream_ca`
checks it as SPIRE does before the server relies on it (the key is the certificate's, the
certificate is a CA and chains to the roots, a lone certificate is a root only when
self-signed), and :meth:`PemUpstreamCa.sign` signs the server's CA with it: only the public
key and subject of the server's request, the trust domain's ID as URI SAN, never outliving
the upstream CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire.crypto import CsrError, parse_csr
from pyspire.crypto.templates import ca_certificate
from pyspire.plugin.errors import Internal, InvalidArgument, PluginConfigError
from pyspire.plugin.upstream import UpstreamX509Ca
from pyspire.spiffe.pem import pem_certificates

__all__ = ["PemSource", "PemUpstreamCa", "load_pem_upstream_ca"]

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_MAX_CHAIN: Final = 10


@dataclass(frozen=True)
class PemSource:
    """One PEM input, with the ``plugin_data`` key that names it and where it was read, for errors."""

    key: str
    where: str
    data: bytes


@dataclass(frozen=True)
class PemUpstreamCa:
    """A checked upstream CA; ``chain`` is what follows a signed certificate up to (not including) a root."""

    certificate: x509.Certificate
    key: SigningKey
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    def sign(self, csr: bytes, preferred_ttl: timedelta, trust_domain_id: str) -> UpstreamX509Ca:
        """The server's CA certificate for ``csr`` (DER), valid for ``preferred_ttl`` at most."""
        try:
            public_key = parse_csr(csr)
            subject = x509.load_der_x509_csr(csr).subject
        except (CsrError, ValueError) as err:
            raise InvalidArgument(f"invalid CSR: {err}") from None
        now = datetime.now(UTC)
        not_after = min(now + preferred_ttl, self.certificate.not_valid_after_utc)
        if not_after <= now:
            expired = self.certificate.not_valid_after_utc.isoformat()
            raise Internal(
                f"the upstream CA has expired (subject {self.certificate.subject.rfc4514_string()}, at {expired}): "
                "replace it before this server can sign"
            )
        builder = ca_certificate(
            subject=subject,
            public_key=public_key,
            trust_domain_id=trust_domain_id,
            now=now,
            not_after=not_after,
            issuer=self.certificate,
        )
        algorithm = None if isinstance(self.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return UpstreamX509Ca((builder.sign(self.key, algorithm), *self.chain), self.roots)


def load_pem_upstream_ca(certificates: PemSource, key: PemSource, bundle: PemSource) -> PemUpstreamCa:
    """The CA of ``certificates`` (it first, then the intermediates above it) signing with ``key``.

    ``bundle`` holds the roots; when it is empty (none configured) ``certificates`` must hold one self-signed CA, which
    is then the root (SPIRE takes a lone certificate as its own root even when it is not
    self-signed: every verifier without partial chains, openssl's default, then fails).
    :class:`PluginConfigError` names the key of what is wrong.
    """
    private_key = _private_key(key)
    chain = _certificates(certificates)
    certificate = chain[0]
    if bundle.data:
        roots = _certificates(bundle)
    elif len(chain) == 1 and _issued_by(certificate, certificate):
        roots = [certificate]
    else:
        raise PluginConfigError(
            bundle.key,
            f"with no {bundle.key} configured only self-signed CAs are supported: {certificates.where} "
            "must then hold one self-signed CA",
        )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(serialization.Encoding.DER, spki) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise PluginConfigError(
            key.key,
            f"unable to load upstream CA: certificate and private key do not match (the key in {key.where} "
            f"does not belong to the certificate in {certificates.where})",
        )
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PluginConfigError(certificates.key, "the upstream certificate is not a CA (basicConstraints CA:TRUE)")
    if not _chains_to(certificate, chain[1:], roots):
        raise PluginConfigError(
            certificates.key,
            "unable to load upstream CA: certificate could not be validated with the provided bundle "
            "or is not self signed",
        )
    above = () if certificate in roots else tuple(chain)
    return PemUpstreamCa(certificate, private_key, above, tuple(roots))


def _private_key(source: PemSource) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(source.data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise PluginConfigError(source.key, f"{source.where} is not a PEM private key: {err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise PluginConfigError(source.key, f"unsupported key type {type(key).__name__}")
    return key


def _certificates(source: PemSource) -> list[x509.Certificate]:
    try:
        return pem_certificates(source.data)
    except ValueError as err:
        raise PluginConfigError(source.key, f"{source.where} holds no readable PEM certificate: {err}") from None


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chains_to(
    certificate: x509.Certificate, intermediates: list[x509.Certificate], roots: list[x509.Certificate]
) -> bool:
    """Whether a path of signatures leads from ``certificate`` through ``intermediates`` to a root."""
    current = certificate
    for _ in range(_MAX_CHAIN):
        if current in roots or any(_issued_by(current, root) for root in roots):
            return True
        parent = next((c for c in intermediates if c != current and _issued_by(current, c)), None)
        if parent is None:
            return False
        current = parent
    return False
