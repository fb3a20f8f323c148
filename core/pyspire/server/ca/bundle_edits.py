"""The edits the CA makes to its own trust domain's bundle, each one datastore transaction.

Authorities join the bundle before they sign (prepared) and leave it when they are pruned 24
hours after they expire, or revoked by an operator after a taint. Each edit is a
read-modify-write (``modify_bundle``) that bumps the sequence number only when it changes
something, so several servers sharing one datastore edit one bundle without losing each
other's authorities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from cryptography import x509

from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import BundleRecord, JwtAuthority, X509Authority
from pyspire.plugin.upstream import JwtKey
from pyspire.spiffe import TrustDomain

__all__ = ["BundleEdits"]


class BundleEdits:
    """Edits ``trust_domain``'s bundle in ``datastore``."""

    def __init__(self, datastore: DataStore, trust_domain: TrustDomain) -> None:
        """Edit the bundle of ``trust_domain``."""
        self._datastore = datastore
        self._trust_domain = trust_domain

    def fetch(self) -> BundleRecord | None:
        """The bundle as stored now."""
        return self._datastore.fetch_bundle(self._trust_domain)

    def add(self, roots: Sequence[bytes], jwt_keys: Sequence[JwtKey] = ()) -> bool:
        """Add X.509 roots (DER) and JWT keys the bundle lacks, in one transaction; True when any was new."""
        added = False

        def add(current: BundleRecord | None) -> BundleRecord | None:
            nonlocal added
            record = current or BundleRecord(self._trust_domain)
            present = {a.der for a in record.x509_authorities}
            new_roots = [X509Authority(der) for der in dict.fromkeys(roots) if der not in present]
            kids = {k.key_id for k in record.jwt_authorities}
            new_keys = [
                JwtAuthority(key.key_id, key.public_key_der, int(key.expires_at.timestamp()) if key.expires_at else 0)
                for key in {k.key_id: k for k in jwt_keys}.values()
                if key.key_id not in kids
            ]
            added = bool(new_roots or new_keys)
            if not added:
                return current
            return replace(
                record,
                x509_authorities=(*record.x509_authorities, *new_roots),
                jwt_authorities=(*record.jwt_authorities, *new_keys),
                sequence_number=record.sequence_number + 1,
            )

        self._datastore.modify_bundle(self._trust_domain, add)
        return added

    def prune(self, limit: datetime) -> bool:
        """Drop authorities that expired before ``limit`` (never the last X.509 one); True when any went."""
        pruned = False

        def prune(current: BundleRecord | None) -> BundleRecord | None:
            nonlocal pruned
            if current is None:
                return None
            x509_kept = tuple(
                a
                for a in current.x509_authorities
                if x509.load_der_x509_certificate(a.der).not_valid_after_utc >= limit
            )
            jwt_kept = tuple(
                k for k in current.jwt_authorities if not k.expires_at or k.expires_at >= limit.timestamp()
            )
            if len(x509_kept) == len(current.x509_authorities) and len(jwt_kept) == len(current.jwt_authorities):
                return current
            if not x509_kept:
                return current  # never empty the bundle: that would make every SVID unverifiable
            pruned = True
            return replace(
                current,
                x509_authorities=x509_kept,
                jwt_authorities=jwt_kept,
                sequence_number=current.sequence_number + 1,
            )

        self._datastore.modify_bundle(self._trust_domain, prune)
        return pruned

    def taint_x509(self, der: bytes) -> None:
        """Mark the X.509 authority ``der`` tainted."""

        def taint(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            authorities = tuple(replace(a, tainted=True) if a.der == der else a for a in current.x509_authorities)
            return replace(current, x509_authorities=authorities, sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._trust_domain, taint)

    def remove_x509(self, der: bytes) -> None:
        """Remove the X.509 authority ``der``."""

        def remove(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            authorities = tuple(a for a in current.x509_authorities if a.der != der)
            return replace(current, x509_authorities=authorities, sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._trust_domain, remove)

    def modify_jwt(self, kid: str, change: Callable[[JwtAuthority], JwtAuthority | None]) -> None:
        """Replace the JWT key ``kid`` by ``change(key)``, or remove it when that is None."""

        def apply(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            keys = []
            for key in current.jwt_authorities:
                if key.key_id == kid:
                    changed = change(key)
                    if changed is not None:
                        keys.append(changed)
                else:
                    keys.append(key)
            return replace(current, jwt_authorities=tuple(keys), sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._trust_domain, apply)
