"""The CA's exchanges with its UpstreamAuthority: the signed CA, and trust in both directions.

With an upstream the server's X.509 CA is an intermediate the upstream signs (its CSR carries
only the key; the certificate must be for that key). In a nested tree every JWT key must be
known everywhere: the upstream's roots and keys are added to this server's bundle, and this
server's keys (its own, and those its downstream servers published to it) go up through
``publish_jwt_key``. A publication lost to an outage is made good at the next rotation step;
nothing else is published again, so a key revoked upstream does not come back from below. As
in SPIRE, roots and keys are only ever added here: they leave with expiry or an operator's
revoke.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.crypto import KeyManagerSigner, build_csr
from pyspire.plugin.errors import FailedPrecondition, PluginError, Unimplemented
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.upstream import JwtKey
from pyspire.server.ca.bundle_edits import BundleEdits
from pyspire.server.ca.issuer import CertificateAuthority
from pyspire.server.ca.journal import public_der
from pyspire.spiffe import TrustDomain

__all__ = ["UpstreamSync"]

_log = logging.getLogger(__name__)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _public_der_of(signer: KeyManagerSigner) -> bytes:
    return signer.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class UpstreamSync:
    """What the CA asks of ``upstream``, and what it owes it."""

    def __init__(self, upstream: UpstreamAuthority, bundle: BundleEdits) -> None:
        """Exchange with ``upstream``, adding what it trusts to ``bundle``."""
        self._upstream = upstream
        self._bundle = bundle
        self._lock = threading.Lock()
        self._unforwarded: dict[str, JwtKey] = {}
        """Downstream (or own) JWT keys whose publication upstream failed: tried again each step."""

    def mint_x509_ca(
        self, signer: KeyManagerSigner, key_id: str, subject: x509.Name, trust_domain: TrustDomain, ttl: timedelta
    ) -> CertificateAuthority:
        """An intermediate CA for ``signer``'s key, signed by the upstream."""
        csr = build_csr(signer, subject, trust_domain.id_string())
        minted = self._upstream.mint_x509_ca(csr, ttl)
        certificate = minted.ca_chain[0]
        if public_der(certificate) != _public_der_of(signer):
            raise FailedPrecondition(
                f"{self._upstream.prefix}: the CA certificate it returned is not for the server's key"
            )
        authority = CertificateAuthority(
            certificate, signer, key_id, tuple(minted.ca_chain[1:]), tuple(minted.upstream_roots)
        )
        if authority.not_after < certificate.not_valid_after_utc:
            _log.warning(
                "The upstream CA outlives the chain above it: it is used, and signs, only until the chain ends",
                extra={
                    "upstream_authority": self._upstream.prefix,
                    "ca_expires_at": certificate.not_valid_after_utc.isoformat(),
                    "chain_expires_at": authority.not_after.isoformat(),
                },
            )
        return authority

    def take_trust(self, own_keys: Callable[[], list[JwtKey]], now: datetime) -> bool:
        """Trust what the upstream trusts, and have it trust our JWT keys; True when the bundle changed.

        ``own_keys`` gives this server's JWT keys at the moment they are compared with the
        upstream's. Outside the CA lock: a slow upstream must not hold up signing.
        """
        if not self._upstream.implements("upstream_trust"):
            return False
        try:
            trust = self._upstream.upstream_trust()
            added = self._bundle.add([_der(root) for root in trust.x509_roots], trust.jwt_keys)
            upstream_kids = {key.key_id for key in trust.jwt_keys}
            owed = own_keys()
            with self._lock:
                owed += self._unforwarded.values()
                self._unforwarded = {}
        except PluginError as err:
            _log.warning("Could not read what the upstream authority trusts; asking again later: %s", err)
            return False
        failed: PluginError | None = None
        for key in {k.key_id: k for k in owed}.values():
            if key.key_id not in upstream_kids and (key.expires_at is None or key.expires_at > now):
                try:
                    added = self.forward_jwt_key(key) or added
                except PluginError as err:
                    failed = err  # kept by forward_jwt_key for the next step
        if failed is not None:
            _log.warning("Could not publish JWT keys upstream; trying again later: %s", failed)
        return added

    def forward_jwt_key(self, key: JwtKey) -> bool:
        """Publish a JWT key upstream; True when the keys the upstream answered with changed the bundle."""
        if not self._upstream.implements("publish_jwt_key"):
            return False
        try:
            return self._bundle.add([], self._upstream.publish_jwt_key(key))
        except Unimplemented:
            return False
        except PluginError:
            with self._lock:
                self._unforwarded[key.key_id] = key  # published again at the next rotation step
            raise
