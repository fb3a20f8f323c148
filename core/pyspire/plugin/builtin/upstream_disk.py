"""The built-in UpstreamAuthority ``disk``: the server's CA is signed by a CA key on disk.

Plugin data (as SPIRE's): ``cert_file_path`` and ``key_file_path`` (PEM) hold the upstream
CA; ``bundle_file_path`` holds the roots above it and is required when that CA is not itself
a root. The files are read again at every CA rotation, so an operator can replace the
upstream CA without restarting the server.

Each signed CA certificate takes only the public key and subject of the server's request,
gets the trust domain's SPIFFE ID as its URI SAN, and never outlives the upstream CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire.crypto import CsrError, parse_csr
from pyspire.crypto.templates import ca_certificate
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, InvalidArgument, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.plugin.upstream import UpstreamX509Ca
from pyspire.spiffe.pem import pem_certificates

__all__ = ["DiskUpstreamAuthority"]

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class DiskUpstreamConfig:
    """``plugin_data`` of ``UpstreamAuthority "disk"``."""

    cert_file_path: str
    key_file_path: str
    bundle_file_path: str = ""


@dataclass(frozen=True)
class _Upstream:
    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    key: _SigningKey
    roots: tuple[x509.Certificate, ...]


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


class DiskUpstreamAuthority:
    """Signs the server's intermediate CA with a key read from disk."""

    def __init__(self) -> None:
        self._config: DiskUpstreamConfig | None = None
        self._trust_domain_id = ""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self._config = parse_plugin_data(DiskUpstreamConfig, plugin_data)
        self._trust_domain_id = core.trust_domain.id_string()
        self._load()

    def _load(self) -> _Upstream:
        assert self._config is not None
        config = self._config
        certificates = _read_certificates(config.cert_file_path, "cert_file_path")
        try:
            key = serialization.load_pem_private_key(_read(config.key_file_path, "key_file_path"), password=None)
        except (ValueError, TypeError) as err:
            raise PluginConfigError("key_file_path", f"{config.key_file_path}: not a PEM private key: {err}") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise PluginConfigError("key_file_path", f"unsupported key type {type(key).__name__}")
        certificate = certificates[0]
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, public) != certificate.public_key().public_bytes(
            serialization.Encoding.DER, public
        ):
            raise PluginConfigError("key_file_path", "the key does not belong to the certificate in cert_file_path")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise PluginConfigError("cert_file_path", "the upstream certificate is not a CA (basicConstraints CA:TRUE)")
        if config.bundle_file_path:
            roots = tuple(_read_certificates(config.bundle_file_path, "bundle_file_path"))
        elif _self_signed(certificate):
            roots = (certificate,)
        else:
            raise PluginConfigError(
                "bundle_file_path", "required: the upstream certificate is not self-signed, so its roots must be given"
            )
        intermediates = () if certificate in roots else (certificate, *certificates[1:])
        return _Upstream(certificate, tuple(intermediates), key, roots)

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        try:
            upstream = self._load()
        except PluginConfigError as err:
            raise Internal(f"the upstream CA files can no longer be used: {err}") from None
        try:
            public_key = parse_csr(csr)
            subject = x509.load_der_x509_csr(csr).subject
        except (CsrError, ValueError) as err:
            raise InvalidArgument(f"invalid CSR: {err}") from None
        now = datetime.now(UTC)
        not_after = min(now + preferred_ttl, upstream.certificate.not_valid_after_utc)
        if not_after <= now:
            raise Internal("the upstream CA has expired")
        builder = ca_certificate(
            subject=subject,
            public_key=public_key,
            trust_domain_id=self._trust_domain_id,
            now=now,
            not_after=not_after,
            issuer=upstream.certificate,
        )
        algorithm = None if isinstance(upstream.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        certificate = builder.sign(upstream.key, algorithm)
        return UpstreamX509Ca((certificate, *upstream.intermediates), upstream.roots)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None


def _read_certificates(path: str, key: str) -> list[x509.Certificate]:
    try:
        return pem_certificates(_read(path, key))
    except ValueError as err:
        raise PluginConfigError(key, f"{path} holds no readable PEM certificate: {err}") from None
