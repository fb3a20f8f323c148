"""The only place the server mints credentials: X509-SVIDs, CA certificates, JWT-SVIDs.

Identity always comes from the caller's authorization decision (the entry, the agent ID),
never from a CSR; the CSR has already been reduced to a public key. Every X.509 credential is
backdated 10 seconds (clock skew, as SPIRE) and never outlives the CA that signs it, nor any
certificate above that CA up to the upstream root (SPIRE caps only at the signing CA, so an
upstream that signs past its own root's end gets SVIDs no verifier accepts for their last
hours).
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pyspire import spire_ids
from pyspire.crypto import Signer, sign_certificate, sign_jwt
from pyspire.crypto.templates import (
    BACKDATE,
    ca_certificate,
    downstream_ca_subject,
    x509_svid_extensions,
    x509_svid_subject,
)
from pyspire.crypto.x509 import issue_certificate
from pyspire.plugin.facades import CredentialComposer
from pyspire.spiffe import SpiffeId, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import start_span

__all__ = ["CertificateAuthority", "CredentialIssuer", "JwtSigningKey", "MintedJwt"]


@dataclass(frozen=True)
class CertificateAuthority:
    """An X.509 CA this server signs with: its certificate, key, and what chains above it.

    ``chain`` holds the certificates between this CA and a root (empty when the CA is a
    self-signed root); ``upstream_roots`` are the roots that chain ends at (the CA itself
    when self-signed). ``authority_id`` is the subject key ID in hex, SPIRE's identifier.
    """

    certificate: x509.Certificate
    signer: Signer
    key_id: str
    chain: tuple[x509.Certificate, ...]
    upstream_roots: tuple[x509.Certificate, ...]

    @property
    def authority_id(self) -> str:
        """The subject key identifier (hex), as SPIRE names authorities."""
        return subject_key_id(self.certificate)

    @functools.cached_property
    def not_after(self) -> datetime:
        """Until when the CA can sign: its certificate's end, or sooner the end of the chain above it.

        The chain is this CA's certificate, the intermediates, and the root they chain to (the
        roots whose subject is the top certificate's issuer; all of them when none is).
        """
        top = self.chain[-1] if self.chain else self.certificate
        roots = [root for root in self.upstream_roots if root.subject == top.issuer] or list(self.upstream_roots)
        return min(c.not_valid_after_utc for c in (self.certificate, *self.chain, *roots))

    @property
    def not_before(self) -> datetime:
        """When the CA certificate starts being valid."""
        return self.certificate.not_valid_before_utc

    @property
    def self_signed(self) -> bool:
        """Whether the CA is its own root."""
        return not self.chain and self.upstream_roots == (self.certificate,)


@dataclass(frozen=True)
class JwtSigningKey:
    """A JWT signing key: its KeyManager key, its published ``kid``, and its lifetime."""

    signer: Signer
    key_id: str
    kid: str
    not_after: datetime


@dataclass(frozen=True)
class MintedJwt:
    """A JWT-SVID and its times (Unix seconds)."""

    token: str
    issued_at: int
    expires_at: int


def subject_key_id(certificate: x509.Certificate) -> str:
    """The hex subject key identifier of a certificate (computed if the extension is absent)."""
    try:
        value = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        value = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    return value.hex()


def _capped(now: datetime, ttl: timedelta, limit: datetime) -> datetime:
    return min(now + ttl, limit)


class CredentialIssuer:
    """Signs credentials with the server's current authorities.

    ``x509_ca`` and ``jwt_key`` are callables so that rotation (which replaces the active
    authority) never races with a signing in progress: each signing reads the current one
    once and uses it throughout.
    """

    def __init__(
        self,
        trust_domain: TrustDomain,
        x509_ca: Callable[[], CertificateAuthority],
        jwt_key: Callable[[], JwtSigningKey | None],
        *,
        jwt_issuer: str = "",
        composers: Sequence[CredentialComposer] = (),
        clock: Callable[[], float] = time.time,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """Sign for ``trust_domain`` with whatever the two callables return at the time."""
        self._metrics = metrics
        self._trust_domain = trust_domain
        self._x509_ca = x509_ca
        self._jwt_key = jwt_key
        self._jwt_issuer = jwt_issuer
        self._composers = tuple(composers)
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _leaf(
        self,
        public_key: PublicKeyTypes,
        spiffe_id: SpiffeId,
        ttl: timedelta,
        dns_names: Sequence[str],
        *,
        compose: bool,
        subject: x509.Name | None = None,
    ) -> list[x509.Certificate]:
        with start_span("ca.sign_x509_svid", attributes={"pyspire.spiffe_id": str(spiffe_id)}):
            chain = self._sign_leaf(public_key, spiffe_id, ttl, dns_names, compose=compose, chosen_subject=subject)
        self._metrics.incr_counter(("server_ca", "sign", "x509_svid"))
        return chain

    def _sign_leaf(
        self,
        public_key: PublicKeyTypes,
        spiffe_id: SpiffeId,
        ttl: timedelta,
        dns_names: Sequence[str],
        *,
        compose: bool,
        chosen_subject: x509.Name | None = None,
    ) -> list[x509.Certificate]:
        authority = self._x509_ca()
        now = self._now()
        subject = chosen_subject if chosen_subject else x509_svid_subject(dns_names)
        extra: tuple[x509.Extension[x509.ExtensionType], ...] = ()
        if compose:
            for composer in self._composers:
                subject, extra = composer.compose_workload_x509_svid(spiffe_id, subject, extra)
        extensions = [
            *x509_svid_extensions(str(spiffe_id), dns_names, public_key, authority.certificate),  # type: ignore[arg-type]
            *extra,
        ]
        # Encoded directly (byte-identical to the builder's output, see the crypto tests):
        # this is the hot path of every workload SVID.
        leaf = issue_certificate(
            serial_number=x509.random_serial_number(),
            issuer=authority.certificate.subject,
            not_before=now - BACKDATE,
            not_after=_capped(now, ttl, authority.not_after),
            subject=subject,
            public_key=public_key,  # type: ignore[arg-type]
            extensions=extensions,
            signer=authority.signer,
        )
        return [leaf, *(() if authority.self_signed else (authority.certificate, *authority.chain))]

    def sign_workload_x509_svid(
        self,
        public_key: PublicKeyTypes,
        spiffe_id: SpiffeId,
        ttl: timedelta,
        dns_names: Sequence[str] = (),
        subject: x509.Name | None = None,
    ) -> list[x509.Certificate]:
        """A workload X509-SVID chain (leaf first, up to but excluding the root).

        ``subject``, when given and not empty, replaces the default one (SPIRE's MintX509SVID
        signs the subject of the CSR).
        """
        return self._leaf(public_key, spiffe_id, ttl, dns_names, compose=True, subject=subject)

    def sign_agent_x509_svid(
        self, public_key: PublicKeyTypes, agent_id: SpiffeId, ttl: timedelta
    ) -> list[x509.Certificate]:
        """An agent's X509-SVID chain."""
        return self._leaf(public_key, agent_id, ttl, (), compose=False)

    def sign_server_x509_svid(self, public_key: PublicKeyTypes, ttl: timedelta) -> list[x509.Certificate]:
        """The server's own X509-SVID chain (``spiffe://<td>/spire/server``)."""
        server_id = spire_ids.server_id(self._trust_domain)
        return self._leaf(public_key, server_id, ttl, (), compose=False)

    def sign_downstream_x509_ca(self, public_key: PublicKeyTypes, ttl: timedelta) -> list[x509.Certificate]:
        """An intermediate CA for a downstream (nested) server, chain up to the root."""
        authority = self._x509_ca()
        now = self._now()
        depth = 1 + len(authority.chain) + (0 if authority.self_signed else 1)
        builder = ca_certificate(
            subject=downstream_ca_subject(authority.certificate.subject, depth),
            public_key=public_key,  # type: ignore[arg-type]
            trust_domain_id=self._trust_domain.id_string(),
            now=now,
            not_after=_capped(now, ttl, authority.not_after),
            issuer=authority.certificate,
        )
        with start_span("ca.sign_downstream_x509_ca"):
            certificate = sign_certificate(builder, authority.signer)
        self._metrics.incr_counter(("server_ca", "sign", "x509_ca_svid"))
        return [certificate, *(() if authority.self_signed else (authority.certificate, *authority.chain))]

    def mint_jwt_svid(
        self, spiffe_id: SpiffeId, audience: Sequence[str], ttl: timedelta, *, include_jti: bool = False
    ) -> MintedJwt:
        """A JWT-SVID for ``spiffe_id`` and ``audience``, expiring no later than its key."""
        key = self._jwt_key()
        if key is None:
            raise RuntimeError("JWT-SVIDs are disabled on this server (disable_jwt_svids)")
        now = self._now()
        expires = _capped(now, ttl, key.not_after)
        claims: dict[str, Any] = {
            "sub": str(spiffe_id),
            "aud": list(audience),
            "exp": int(expires.timestamp()),
            "iat": int(now.timestamp()),
        }
        if self._jwt_issuer:
            claims["iss"] = self._jwt_issuer
        if include_jti:
            claims["jti"] = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        for composer in self._composers:
            composed = dict(composer.compose_workload_jwt_svid(spiffe_id, claims))
            # The server's claims are not negotiable; a composer only adds.
            claims = {**composed, **{k: claims[k] for k in ("sub", "aud", "exp", "iat")}}
        with start_span("ca.sign_jwt_svid", attributes={"pyspire.spiffe_id": str(spiffe_id)}):
            token = sign_jwt(claims, key.signer, key.kid)
        self._metrics.incr_counter(("server_ca", "sign", "jwt_svid"))
        return MintedJwt(token, claims["iat"], claims["exp"])
