"""SPIRE API bundles (``spire.api.types.Bundle``) as :class:`pyspire.spiffe.Bundle` objects.

Used by every client of the server APIs (the agent, the CLI); the server has its own
conversion to datastore records.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import Bundle, TrustDomain
from pyspire.spiffe.bundle import refresh_hint_from_seconds
from pyspire.spiffe.pem import der_certificate

__all__ = ["bundle_from_proto", "bundle_to_proto", "tainted_jwt_key_ids", "tainted_key_ids"]


def bundle_from_proto(proto: types_pb2.Bundle) -> Bundle:
    """The bundle; ValueError (or SpiffeIdError/BundleError, both ValueErrors) if it cannot be read."""
    jwt = {key.key_id: serialization.load_der_public_key(key.public_key) for key in proto.jwt_authorities}
    return Bundle(
        TrustDomain.parse(proto.trust_domain),
        [der_certificate(c.asn1) for c in proto.x509_authorities],
        jwt,  # type: ignore[arg-type]
        sequence_number=proto.sequence_number,
        refresh_hint=refresh_hint_from_seconds(proto.refresh_hint) if proto.refresh_hint else None,
    )


def bundle_to_proto(bundle: Bundle) -> types_pb2.Bundle:
    """The API's Bundle for a bundle a client read (from a file, say) to send to the server."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return types_pb2.Bundle(
        trust_domain=bundle.trust_domain.name,
        x509_authorities=[
            types_pb2.X509Certificate(asn1=c.public_bytes(serialization.Encoding.DER)) for c in bundle.x509_authorities
        ],
        jwt_authorities=[
            types_pb2.JWTKey(key_id=key_id, public_key=key.public_bytes(serialization.Encoding.DER, spki))
            for key_id, key in bundle.jwt_authorities.items()
        ],
        refresh_hint=int(bundle.refresh_hint.total_seconds()) if bundle.refresh_hint else 0,
        sequence_number=bundle.sequence_number or 0,
    )


def tainted_key_ids(proto: types_pb2.Bundle) -> frozenset[bytes]:
    """The subject key IDs of the tainted X.509 authorities (what signed certificates' AKIs hold)."""
    found = set()
    for authority in proto.x509_authorities:
        if not authority.tainted:
            continue
        certificate = der_certificate(authority.asn1)
        try:
            found.add(certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
        except x509.ExtensionNotFound:
            found.add(x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest)
    return frozenset(found)


def tainted_jwt_key_ids(proto: types_pb2.Bundle) -> frozenset[str]:
    """The key IDs of the tainted JWT authorities (what signed tokens' ``kid`` headers hold)."""
    return frozenset(key.key_id for key in proto.jwt_authorities if key.tainted)
