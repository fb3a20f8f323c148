"""What an UpstreamAuthority returns: the server's intermediate CA, the roots and keys above it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

__all__ = ["JwtKey", "UpstreamTrust", "UpstreamX509Ca"]


@dataclass(frozen=True)
class UpstreamX509Ca:
    """A CA certificate signed upstream for this server.

    ``ca_chain`` starts with the server's new CA certificate (whose public key is the one in
    the CSR) followed by any intermediates up to, but not including, a root.
    ``upstream_roots`` are the roots that chain verifies to; the server publishes them in the
    trust bundle.
    """

    ca_chain: tuple[x509.Certificate, ...]
    upstream_roots: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class JwtKey:
    """A JWT signing key as it is published in bundles."""

    key_id: str
    public_key_der: bytes
    expires_at: datetime | None = None


@dataclass(frozen=True)
class UpstreamTrust:
    """What the upstream trusts now: its X.509 roots and JWT keys, to be trusted here too."""

    x509_roots: tuple[x509.Certificate, ...]
    jwt_keys: tuple[JwtKey, ...]
