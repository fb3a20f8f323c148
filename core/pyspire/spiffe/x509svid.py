"""X509-SVIDs: parsing, the standard's rules, and verification against a bundle.

Rules enforced (X509-SVID standard §2-§5), each failure a :class:`X509SvidError` whose
``code`` names it:

- the leaf has exactly one URI SAN, a strictly valid SPIFFE ID with a non-root path;
- the leaf is not a CA, has ``digitalSignature`` and has neither ``keyCertSign`` nor
  ``cRLSign``;
- every other certificate of the chain is a CA with ``keyCertSign``;
- the private key matches the leaf.

:func:`verify` picks the bundle by the leaf's trust domain only (a root of another trust
domain never vouches for this one), builds the path through the presented intermediates to
one of that bundle's authorities, and checks every certificate's validity period.
:func:`check_verified_path` applies the same rules to a path whose signatures a TLS library
already checked.
Verified issuer/subject pairs of CA certificates are remembered, so a chain through an
intermediate costs one signature check per call in the steady state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from pyspire.spiffe.bundle import BundleSource
from pyspire.spiffe.pem import PemError, der_certificate, der_certificates, pem_blocks
from pyspire.spiffe.spiffeid import SpiffeId, SpiffeIdError

__all__ = ["X509Svid", "X509SvidError", "check_verified_path", "leaf_spiffe_id", "verify"]

MAX_CHAIN_LENGTH: Final = 16
"""Longer chains are refused before any signature is checked (a CPU-exhaustion guard)."""

SvidPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class X509SvidError(ValueError):
    """An X509-SVID breaks a rule of the standard, or does not verify; see ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"x509svid: {message}")
        self.code = code


def _extension(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as err:  # a duplicated or malformed extension
        raise X509SvidError("cert_parse_error", f"certificate has a malformed extension: {err}") from None


def leaf_spiffe_id(certificate: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in a certificate's single URI SAN (strict; any other shape is an error)."""
    san = _extension(certificate, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    uris = (
        san.get_values_for_type(x509.UniformResourceIdentifier) if isinstance(san, x509.SubjectAlternativeName) else []
    )
    if not uris:
        raise X509SvidError("no_uri_san", "certificate validation failed: certificate contains no URI SAN")
    if len(uris) > 1:
        raise X509SvidError(
            "multiple_uri_sans",
            "certificate validation failed: certificate contains more than one URI SAN",
        )
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as err:
        raise X509SvidError(
            "invalid_spiffe_id",
            f"certificate validation failed: invalid SPIFFE ID in URI SAN: {err}",
        ) from None


def _check_leaf(leaf: x509.Certificate) -> SpiffeId:
    spiffe_id = leaf_spiffe_id(leaf)
    if not spiffe_id.path:
        raise X509SvidError(
            "root_path_id",
            "certificate validation failed: leaf certificate SPIFFE ID must have a non-root path",
        )
    constraints = _extension(leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise X509SvidError(
            "leaf_ca",
            "certificate validation failed: leaf certificate must not have CA flag set to true",
        )
    usage = _extension(leaf, ExtensionOID.KEY_USAGE)
    if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
        raise X509SvidError(
            "leaf_no_digital_signature",
            "certificate validation failed: leaf certificate must have 'digitalSignature' set as key usage",
        )
    if usage.key_cert_sign:
        raise X509SvidError(
            "leaf_key_cert_sign",
            "certificate validation failed: leaf certificate must not have 'keyCertSign' set as key usage",
        )
    if usage.crl_sign:
        raise X509SvidError(
            "leaf_crl_sign",
            "certificate validation failed: leaf certificate must not have 'cRLSign' set as key usage",
        )
    return spiffe_id


def _check_signing_certificate(certificate: x509.Certificate) -> None:
    constraints = _extension(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise X509SvidError(
            "signing_cert_not_ca",
            "certificate validation failed: signing certificate must have CA flag set to true",
        )
    usage = _extension(certificate, ExtensionOID.KEY_USAGE)
    if not isinstance(usage, x509.KeyUsage) or not usage.key_cert_sign:
        raise X509SvidError(
            "signing_cert_no_key_cert_sign",
            "certificate validation failed: signing certificate must have 'keyCertSign' set as key usage",
        )


def _check_chain(chain: Sequence[x509.Certificate]) -> SpiffeId:
    if not chain:
        raise X509SvidError("no_certificates", "certificate validation failed: no certificates found")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise X509SvidError(
            "chain_too_long",
            f"certificate chain has {len(chain)} certificates; at most {MAX_CHAIN_LENGTH} are accepted",
        )
    spiffe_id = _check_leaf(chain[0])
    for certificate in chain[1:]:
        _check_signing_certificate(certificate)
    return spiffe_id


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_certificates(data: bytes) -> list[x509.Certificate]:
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            return [der_certificate(der) for _, der in pem_blocks(data, {"CERTIFICATE"})]
        except (PemError, ValueError) as err:
            raise X509SvidError("cert_parse_error", f"cannot parse PEM encoded certificate: {err}") from None
    if not data or data[:1] != b"\x30":
        raise X509SvidError("cert_parse_error", "cannot parse certificate: neither PEM nor DER")
    try:
        return der_certificates(data)
    except ValueError as err:
        raise X509SvidError("cert_parse_error", f"cannot parse DER encoded certificate: {err}") from None


def _load_private_key(data: bytes) -> PrivateKeyTypes:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            blocks = list(pem_blocks(data, {"PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"}))
            if not blocks:
                raise X509SvidError("no_private_key", "private key validation failed: no private key found")
            # DER of any of the three block types (PKCS#8, SEC1, PKCS#1) loads directly.
            return serialization.load_der_private_key(blocks[0][1], password=None)
        return serialization.load_der_private_key(data, password=None)
    except X509SvidError:
        raise
    except (PemError, ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise X509SvidError("key_parse_error", f"cannot parse private key: {err}") from None


class X509Svid:
    """An X509-SVID with its private key: what a workload presents in TLS."""

    __slots__ = ("_chain", "_hint", "_private_key", "_spiffe_id")

    def __init__(
        self,
        spiffe_id: SpiffeId,
        chain: Sequence[x509.Certificate],
        private_key: SvidPrivateKey,
        hint: str = "",
    ) -> None:
        """Wrap parts that are already known to be valid; use :meth:`parse` for input."""
        self._spiffe_id = spiffe_id
        self._chain = tuple(chain)
        self._private_key = private_key
        self._hint = hint

    @classmethod
    def from_parts(cls, chain: Sequence[x509.Certificate], private_key: PrivateKeyTypes, hint: str = "") -> X509Svid:
        """Check a chain and key against the standard's rules and build the SVID."""
        spiffe_id = _check_chain(chain)
        if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise X509SvidError("key_parse_error", f"unsupported private key type {type(private_key).__name__}")
        try:
            leaf_key = chain[0].public_key()
        except (ValueError, UnsupportedAlgorithm) as err:
            raise X509SvidError("cert_parse_error", f"leaf certificate has an unusable public key: {err}") from None
        if _public_der(private_key.public_key()) != _public_der(leaf_key):
            raise X509SvidError(
                "key_mismatch",
                "private key validation failed: leaf certificate does not match private key",
            )
        return cls(spiffe_id, chain, private_key, hint)

    @classmethod
    def parse(cls, certificates: bytes, private_key: bytes, hint: str = "") -> X509Svid:
        """Parse PEM (or DER) certificates, leaf first, and a PEM (or DER PKCS#8) key.

        The certificates are checked before the key, so a bad leaf is reported as such even
        when the key does not match it.
        """
        chain = _load_certificates(certificates)
        _check_chain(chain)
        return cls.from_parts(chain, _load_private_key(private_key), hint)

    @classmethod
    def parse_raw(cls, der_chain: bytes, der_key: bytes, hint: str = "") -> X509Svid:
        """Parse concatenated DER certificates and a PKCS#8 DER key (Workload API form)."""
        return cls.parse(der_chain, der_key, hint)

    @property
    def spiffe_id(self) -> SpiffeId:
        """The SVID's SPIFFE ID."""
        return self._spiffe_id

    @property
    def leaf(self) -> x509.Certificate:
        """The SVID certificate itself."""
        return self._chain[0]

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The leaf followed by the intermediates a verifier needs."""
        return self._chain

    @property
    def private_key(self) -> SvidPrivateKey:
        """The private key matching the leaf."""
        return self._private_key

    @property
    def hint(self) -> str:
        """The operator's hint telling several SVIDs of one workload apart."""
        return self._hint

    @property
    def expires_at(self) -> datetime:
        """When the leaf expires."""
        return self.leaf.not_valid_after_utc

    def marshal(self) -> tuple[bytes, bytes]:
        """``(certificates PEM, PKCS#8 key PEM)``."""
        certificates = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self._chain)
        key = self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificates, key

    def marshal_raw(self) -> tuple[bytes, bytes]:
        """``(concatenated DER certificates, PKCS#8 DER key)``."""
        certificates = b"".join(c.public_bytes(serialization.Encoding.DER) for c in self._chain)
        key = self._private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificates, key

    def __repr__(self) -> str:
        return f"X509Svid({str(self._spiffe_id)!r}, expires={self.expires_at.isoformat()})"


class _VerifiedPairs:
    """A bounded memory of (issuer, subject) certificate pairs whose signature checked out.

    Only CA-to-CA links are remembered (leaves change with every rotation and are verified
    every time), keyed by both certificates' full DER, so a different certificate under the
    same name is never mistaken for a remembered one.
    """

    def __init__(self, size: int = 1024) -> None:
        self._pairs: OrderedDict[tuple[x509.Certificate, x509.Certificate], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, pair: tuple[x509.Certificate, x509.Certificate]) -> bool:
        with self._lock:
            if pair in self._pairs:
                self._pairs.move_to_end(pair)
                return True
        return False

    def add(self, pair: tuple[x509.Certificate, x509.Certificate]) -> None:
        with self._lock:
            self._pairs[pair] = None
            if len(self._pairs) > self._size:
                self._pairs.popitem(last=False)


_VERIFIED_CA_LINKS = _VerifiedPairs()


class _IssuerKeys:
    """Parsed public keys of issuing certificates, kept so each check skips re-parsing."""

    def __init__(self, size: int = 256) -> None:
        self._keys: OrderedDict[x509.Certificate, PublicKeyTypes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, certificate: x509.Certificate) -> PublicKeyTypes:
        with self._lock:
            key = self._keys.get(certificate)
            if key is not None:
                self._keys.move_to_end(certificate)
                return key
        key = certificate.public_key()
        with self._lock:
            self._keys[certificate] = key
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return key


_ISSUER_KEYS = _IssuerKeys()


def _signature_valid(subject: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = _ISSUER_KEYS.get(issuer)
    hash_algorithm = subject.signature_hash_algorithm
    parameters = subject.signature_algorithm_parameters
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(parameters, ec.ECDSA):
        key.verify(subject.signature, subject.tbs_certificate_bytes, parameters)
    elif isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None and parameters is not None:
        key.verify(subject.signature, subject.tbs_certificate_bytes, parameters, hash_algorithm)  # type: ignore[arg-type]
    elif isinstance(key, ed25519.Ed25519PublicKey) and parameters is None:
        key.verify(subject.signature, subject.tbs_certificate_bytes)
    else:
        return False  # the signature algorithm does not fit the issuer's key
    return True


def _issued_by(subject: x509.Certificate, issuer: x509.Certificate, remember: bool) -> bool:
    if subject.issuer != issuer.subject:
        return False
    # Certificates compare and hash by their full DER, signatures included: the same TBS with
    # another signature is another certificate.
    pair = (issuer, subject) if remember else None
    if pair is not None and pair in _VERIFIED_CA_LINKS:
        return True
    try:
        if not _signature_valid(subject, issuer):
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    if pair is not None:
        _VERIFIED_CA_LINKS.add(pair)
    return True


def _check_validity(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise X509SvidError(
            "not_yet_valid",
            f"could not verify leaf certificate: {what} is not valid until "
            f"{certificate.not_valid_before_utc.isoformat()} (now {now.isoformat()})",
        )
    if now > certificate.not_valid_after_utc:
        raise X509SvidError(
            "expired",
            f"could not verify leaf certificate: {what} expired at "
            f"{certificate.not_valid_after_utc.isoformat()} (now {now.isoformat()})",
        )


def _max_path_length(certificate: x509.Certificate) -> int | None:
    constraints = _extension(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    return constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None


def verify(
    chain: Sequence[x509.Certificate], bundle_source: BundleSource, *, now: datetime | None = None
) -> tuple[SpiffeId, list[list[x509.Certificate]]]:
    """Verify an X509-SVID chain (leaf first) and return its SPIFFE ID and verified chain.

    The returned chain runs from the leaf to the trusted authority. Raises
    :class:`X509SvidError` with code ``bundle_not_found``, ``untrusted``, ``expired``,
    ``not_yet_valid`` or one of the structural codes.
    """
    spiffe_id = _check_chain(chain)
    bundle = bundle_source.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    if bundle is None:
        raise X509SvidError(
            "bundle_not_found",
            f'could not get X509 bundle: no bundle found for trust domain "{spiffe_id.trust_domain}"',
        )
    moment = now or datetime.now(UTC)
    path = [chain[0]]
    remaining = list(chain[1:])
    current = chain[0]
    while True:
        anchor = next(
            (root for root in bundle.x509_authorities if _issued_by(current, root, remember=current is not chain[0])),
            None,
        )
        if anchor is not None:
            path.append(anchor)
            break
        issuer = next((c for c in remaining if _issued_by(current, c, remember=current is not chain[0])), None)
        if issuer is None:
            raise X509SvidError(
                "untrusted",
                "could not verify leaf certificate: no chain to an authority of trust domain "
                f'"{spiffe_id.trust_domain}"',
            )
        remaining.remove(issuer)
        path.append(issuer)
        current = issuer
    _check_path(path, moment)
    return spiffe_id, [path]


def _check_path(path: Sequence[x509.Certificate], moment: datetime) -> None:
    """Validity periods and path length constraints of a path, leaf first, authority last."""
    for index, certificate in enumerate(path):
        _check_validity(
            certificate,
            moment,
            "leaf certificate" if index == 0 else f"certificate {index} of the chain",
        )
        limit = _max_path_length(certificate) if index > 0 else None
        if limit is not None and index - 1 > limit:
            raise X509SvidError(
                "untrusted",
                f"could not verify leaf certificate: path length constraint of certificate {index} exceeded",
            )


def check_verified_path(
    path: Sequence[x509.Certificate], bundle_source: BundleSource, *, now: datetime | None = None
) -> SpiffeId:
    """The SPIFFE ID of a path whose signatures someone else checked (OpenSSL, in a TLS handshake).

    ``path`` runs from the leaf to the authority that anchored it. Everything :func:`verify`
    checks except the signatures: the X509-SVID rules of the leaf and of every certificate
    that signs, that the anchor is an X.509 authority of the bundle of the leaf's own trust
    domain (another trust domain's never vouches for it), validity periods and path length
    constraints. Raises :class:`X509SvidError`.
    """
    if len(path) < 2:
        raise X509SvidError(
            "untrusted", "could not verify leaf certificate: the certificate is itself an authority, not an SVID"
        )
    spiffe_id = _check_chain(path[:-1])
    bundle = bundle_source.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    if bundle is None:
        raise X509SvidError(
            "bundle_not_found",
            f'could not get X509 bundle: no bundle found for trust domain "{spiffe_id.trust_domain}"',
        )
    if not bundle.has_x509_authority(path[-1]):
        raise X509SvidError(
            "untrusted",
            f'could not verify leaf certificate: no chain to an authority of trust domain "{spiffe_id.trust_domain}"',
        )
    _check_path(path, now or datetime.now(UTC))
    return spiffe_id
