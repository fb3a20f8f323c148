"""Bundle records as the datastore keeps them <-> SPIFFE bundles as the standard defines them."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.plugin.records import BundleRecord, JwtAuthority, X509Authority
from pyspire.spiffe import Bundle

__all__ = ["bundle_to_record", "record_to_bundle"]


def record_to_bundle(record: BundleRecord, refresh_hint: timedelta | None = None) -> Bundle:
    """The SPIFFE bundle of a stored record (``refresh_hint`` overrides the record's)."""
    if refresh_hint is None and record.refresh_hint:
        refresh_hint = timedelta(seconds=record.refresh_hint)
    return Bundle(
        record.trust_domain,
        [x509.load_der_x509_certificate(authority.der) for authority in record.x509_authorities],
        {key.key_id: serialization.load_der_public_key(key.public_key_der) for key in record.jwt_authorities},  # type: ignore[misc]
        sequence_number=record.sequence_number,
        refresh_hint=refresh_hint,
    )


def bundle_to_record(bundle: Bundle) -> BundleRecord:
    """A record to store for a fetched SPIFFE bundle."""
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    hint = bundle.refresh_hint
    return BundleRecord(
        bundle.trust_domain,
        tuple(X509Authority(c.public_bytes(serialization.Encoding.DER)) for c in bundle.x509_authorities),
        tuple(
            JwtAuthority(key_id, key.public_bytes(serialization.Encoding.DER, public))
            for key_id, key in sorted(bundle.jwt_authorities.items())
        ),
        refresh_hint=int(hint.total_seconds()) if hint else 0,
        sequence_number=bundle.sequence_number or 0,
    )
