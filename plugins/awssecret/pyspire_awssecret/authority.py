"""UpstreamAuthority ``awssecret``: the server's CA is signed by a CA read from AWS Secrets Manager.

At configure the plugin reads three secrets (``SecretString``, PEM): ``key_file_arn`` (the
upstream CA's private key), ``cert_file_arn`` (its certificate, followed by any intermediates
above it) and ``bundle_file_arn`` (the roots). Without a bundle the certificate must be a single
self-signed CA, which is then the root. The key must belong to the certificate and the
certificate must chain to one of the roots; anything else stops the server. As in SPIRE, the
secrets are read only at start: a rotated secret takes effect at the next restart.

Each signed CA certificate takes only the public key and subject of the server's request, gets
the trust domain's SPIFFE ID as its URI SAN, and never outlives the upstream CA. The chain
returned is the new certificate, then the certificates of ``cert_file_arn``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pyspire.crypto import CA_KEY_USAGE, CsrError, parse_csr
from pyspire.plugin import (
    CoreConfig,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PluginConfigError,
    PluginLogger,
    UpstreamX509Ca,
    hookimpl,
    parse_plugin_data,
)
from pyspire.spiffe.pem import pem_certificates

from pyspire_awssecret.secrets_manager import Credentials, SecretReader

__all__ = ["AwsSecretConfig", "AwsSecretUpstreamAuthority"]

BACKDATE = timedelta(seconds=10)
_MAX_CHAIN = 10
_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class AwsSecretConfig:
    """``plugin_data`` of ``UpstreamAuthority "awssecret"`` (SPIRE's keys)."""

    cert_file_arn: str
    key_file_arn: str
    region: str = ""
    bundle_file_arn: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    secret_token: str = ""
    assume_role_arn: str = ""

    def check(self) -> None:
        """Refuse what cannot work, naming the key."""
        for key in ("cert_file_arn", "key_file_arn"):
            if not getattr(self, key):
                raise PluginConfigError(key, "is required")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            missing = "secret_access_key" if self.access_key_id else "access_key_id"
            raise PluginConfigError(missing, "access_key_id and secret_access_key are set together or not at all")
        if self.secret_token and not self.access_key_id:
            raise PluginConfigError("secret_token", "is used only with access_key_id and secret_access_key")


@dataclass(frozen=True)
class _Upstream:
    certificate: x509.Certificate
    key: _SigningKey
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]


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


def _certificates(pem: str, arn: str, key: str) -> list[x509.Certificate]:
    try:
        return pem_certificates(pem.encode())
    except ValueError as err:
        raise PluginConfigError(key, f"{arn} holds no readable PEM certificate: {err}") from None


def _load(key_pem: str, certs_pem: str, bundle_pem: str, config: AwsSecretConfig) -> _Upstream:
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise PluginConfigError("key_file_arn", f"{config.key_file_arn} is not a PEM private key: {err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise PluginConfigError("key_file_arn", f"unsupported key type {type(key).__name__}")
    certificates = _certificates(certs_pem, config.cert_file_arn, "cert_file_arn")
    certificate = certificates[0]
    if bundle_pem:
        roots = _certificates(bundle_pem, config.bundle_file_arn, "bundle_file_arn")
        chain = tuple(certificates)
    elif len(certificates) != 1 or not _issued_by(certificate, certificate):
        # SPIRE takes a lone certificate as its own root even when it is not self-signed; a
        # bundle whose anchor is an intermediate fails in every verifier without partial
        # chains (openssl's default), so it is refused here, as the disk plugin does.
        raise PluginConfigError(
            "bundle_file_arn", "with no bundle_file_arn configured only self-signed CAs are supported"
        )
    else:
        roots, chain = [certificate], ()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise PluginConfigError("key_file_arn", "unable to load upstream CA: certificate and private key do not match")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PluginConfigError("cert_file_arn", "the upstream certificate is not a CA (basicConstraints CA:TRUE)")
    if not _chains_to(certificate, certificates[1:], roots):
        raise PluginConfigError(
            "cert_file_arn",
            "unable to load upstream CA: certificate could not be validated with the provided bundle "
            "or is not self signed",
        )
    return _Upstream(certificate, key, chain, tuple(roots))


class AwsSecretUpstreamAuthority:
    """Signs the server's intermediate CA with a CA key kept in AWS Secrets Manager."""

    def __init__(self) -> None:
        self._upstream: _Upstream | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(AwsSecretConfig, plugin_data).check()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AwsSecretConfig, plugin_data)
        config.check()
        reader = SecretReader(
            Credentials(
                region=config.region,
                access_key_id=config.access_key_id,
                secret_access_key=config.secret_access_key,
                session_token=config.secret_token or os.environ.get("AWS_SESSION_TOKEN", ""),
                assume_role_arn=config.assume_role_arn,
            )
        )
        key_pem = reader.read(config.key_file_arn)
        certs_pem = reader.read(config.cert_file_arn)
        bundle_pem = reader.read(config.bundle_file_arn) if config.bundle_file_arn else ""
        self._upstream = _load(key_pem, certs_pem, bundle_pem, config)
        self._trust_domain_id = core.trust_domain.id_string()
        logger.info(
            "Loaded the upstream CA from AWS Secrets Manager",
            extra={
                "subject": self._upstream.certificate.subject.rfc4514_string(),
                "cert_file_arn": config.cert_file_arn,
            },
        )

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        upstream = self._upstream
        if upstream is None:
            raise FailedPrecondition("not configured")
        try:
            public_key = parse_csr(csr)
            subject = x509.load_der_x509_csr(csr).subject
        except (CsrError, ValueError) as err:
            raise InvalidArgument(f"invalid CSR: {err}") from None
        now = datetime.now(UTC)
        not_after = min(now + preferred_ttl, upstream.certificate.not_valid_after_utc)
        if not_after <= now:
            raise Internal("the upstream CA has expired")
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(upstream.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(upstream.key.public_key()), critical=False
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self._trust_domain_id)]), critical=False
            )
        )
        algorithm = None if isinstance(upstream.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        certificate = builder.sign(upstream.key, algorithm)
        return UpstreamX509Ca((certificate, *upstream.chain), upstream.roots)
