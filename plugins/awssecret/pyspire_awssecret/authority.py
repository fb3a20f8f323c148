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
from datetime import timedelta
from typing import Any

from pyspire.plugin import (
    CoreConfig,
    FailedPrecondition,
    PemSource,
    PemUpstreamCa,
    PluginConfigError,
    PluginLogger,
    UpstreamX509Ca,
    hookimpl,
    load_pem_upstream_ca,
    parse_plugin_data,
)

from pyspire_awssecret.secrets_manager import Credentials, SecretReader

__all__ = ["AwsSecretConfig", "AwsSecretUpstreamAuthority"]


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


class AwsSecretUpstreamAuthority:
    """Signs the server's intermediate CA with a CA key kept in AWS Secrets Manager."""

    def __init__(self) -> None:
        self._upstream: PemUpstreamCa | None = None

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
        self._upstream = load_pem_upstream_ca(
            PemSource("cert_file_arn", config.cert_file_arn, certs_pem.encode()),
            PemSource("key_file_arn", config.key_file_arn, key_pem.encode()),
            PemSource("bundle_file_arn", config.bundle_file_arn, bundle_pem.encode()),
        )
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
        return upstream.sign(csr, preferred_ttl, self._trust_domain_id)
