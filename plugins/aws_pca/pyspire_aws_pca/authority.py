"""UpstreamAuthority ``aws_pca``: AWS Private CA issues the server's intermediate CA certificate.

At configure the plugin looks the certificate authority up (``DescribeCertificateAuthority``):
a CA that cannot be described stops the server; one that is not ACTIVE is logged, as SPIRE
does, since issuance will fail until it is. Without ``signing_algorithm`` the CA's own default
is used, without ``ca_signing_template_arn`` AWS's ``SubordinateCACertificate_PathLen0/V1``
(a CA that may sign only leaves: the server's SVIDs).

Each server CA is one ``IssueCertificate`` of the server's CSR, valid until now plus the
server's ``ca_ttl`` (AWS may end it sooner, at its own CA's expiry), then boto3's
``certificate_issued`` waiter (up to three minutes, as SPIRE waits) and ``GetCertificate``. The
chain AWS returns ends with its root: that root (with the certificates of
``supplemental_bundle_path``) is the upstream bundle, the certificates before it follow the new
CA in the chain the server serves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
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
from pyspire_aws_common import CLIENT_CONFIG, Credentials, aws_error, session

__all__ = ["AwsPcaConfig", "AwsPcaUpstreamAuthority"]

DEFAULT_TEMPLATE_ARN = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
ISSUANCE_WAIT = timedelta(minutes=3)
"""How long SPIRE waits for AWS to issue a certificate."""
_POLL_DELAY = 1
"""Seconds between GetCertificate polls while AWS is still issuing."""


@dataclass(frozen=True)
class AwsPcaConfig:
    """``plugin_data`` of ``UpstreamAuthority "aws_pca"`` (SPIRE's keys)."""

    region: str = ""
    certificate_authority_arn: str = ""
    signing_algorithm: str = ""
    ca_signing_template_arn: str = ""
    assume_role_arn: str = ""
    endpoint: str = ""
    supplemental_bundle_path: str = ""

    def check(self) -> None:
        """Refuse what cannot work, naming the key (SPIRE requires the same two)."""
        if not self.region:
            raise PluginConfigError("region", "is required")
        if not self.certificate_authority_arn:
            raise PluginConfigError("certificate_authority_arn", "is required")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise PluginConfigError("endpoint", f'"{self.endpoint}" is not an http:// or https:// URL')


@dataclass(frozen=True)
class _Issuing:
    """What every issuance sends, settled at configure."""

    client: Any
    authority_arn: str
    signing_algorithm: str
    template_arn: str
    supplemental: tuple[x509.Certificate, ...]


def _supplemental_bundle(path: str) -> tuple[x509.Certificate, ...]:
    if not path:
        return ()
    try:
        return tuple(pem_certificates(Path(path).read_bytes()))
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InvalidArgument(f"failed to load supplemental bundle {path}: {reason}") from None


class AwsPcaUpstreamAuthority:
    """Has AWS Private CA issue the server's CA certificates."""

    def __init__(self) -> None:
        self._issuing: _Issuing | None = None
        self._logger: PluginLogger | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(AwsPcaConfig, plugin_data).check()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AwsPcaConfig, plugin_data)
        config.check()
        supplemental = _supplemental_bundle(config.supplemental_bundle_path)
        aws = session(Credentials(region=config.region, assume_role_arn=config.assume_role_arn), "pyspire-aws-pca")
        try:
            client = aws.client("acm-pca", endpoint_url=config.endpoint or None, config=CLIENT_CONFIG)
            described = client.describe_certificate_authority(CertificateAuthorityArn=config.certificate_authority_arn)[
                "CertificateAuthority"
            ]
        except (BotoCoreError, ClientError, ValueError) as err:
            raise aws_error("failed to describe CertificateAuthority", err) from None
        if described.get("Status") != "ACTIVE":
            logger.warning(
                "Certificate is in an invalid state for issuance",
                extra={
                    "certificate_authority_arn": config.certificate_authority_arn,
                    "status": described.get("Status"),
                },
            )
        algorithm = config.signing_algorithm or described["CertificateAuthorityConfiguration"]["SigningAlgorithm"]
        if not config.signing_algorithm:
            logger.info("No signing algorithm specified, using the CA default", extra={"signing_algorithm": algorithm})
        template = config.ca_signing_template_arn or DEFAULT_TEMPLATE_ARN
        self._issuing = _Issuing(client, config.certificate_authority_arn, algorithm, template, supplemental)
        self._logger = logger

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        issuing, logger = self._issuing, self._logger
        if issuing is None or logger is None:
            raise FailedPrecondition("not configured")
        try:
            request = x509.load_der_x509_csr(csr)
        except ValueError as err:
            raise InvalidArgument(f"failed to parse the CSR: {err}") from None
        if not request.is_signature_valid:
            raise InvalidArgument("the CSR's signature does not verify")
        request_pem = request.public_bytes(serialization.Encoding.PEM)
        try:
            issued = issuing.client.issue_certificate(
                CertificateAuthorityArn=issuing.authority_arn,
                Csr=request_pem,
                SigningAlgorithm=issuing.signing_algorithm,
                TemplateArn=issuing.template_arn,
                Validity={"Type": "ABSOLUTE", "Value": int(time.time() + preferred_ttl.total_seconds())},
            )
        except (BotoCoreError, ClientError) as err:
            raise aws_error("failed submitting CSR", err) from None
        certificate_arn = issued["CertificateArn"]
        logger.info("Waiting for issuance from ACM", extra={"certificate_arn": certificate_arn})
        where = {"CertificateAuthorityArn": issuing.authority_arn, "CertificateArn": certificate_arn}
        try:
            issuing.client.get_waiter("certificate_issued").wait(
                **where,
                WaiterConfig={"Delay": _POLL_DELAY, "MaxAttempts": int(ISSUANCE_WAIT.total_seconds() / _POLL_DELAY)},
            )
            answer = issuing.client.get_certificate(**where)
        except WaiterError as err:
            detail = (err.last_response or {}).get("Error", {})
            reason = f"{detail['Code']}: {detail.get('Message', '')}" if detail.get("Code") else str(err)
            raise Internal(f"failed waiting for issuance: {reason}") from None
        except (BotoCoreError, ClientError) as err:
            raise aws_error("failed to get certificates", err) from None
        return self._response(answer, issuing)

    @staticmethod
    def _response(answer: Mapping[str, Any], issuing: _Issuing) -> UpstreamX509Ca:
        try:
            [certificate] = pem_certificates(answer["Certificate"].encode())
        except (KeyError, ValueError) as err:
            raise Internal(f"failed to parse certificate from response: {err}") from None
        try:
            chain = pem_certificates(answer.get("CertificateChain", "").encode())
        except ValueError as err:
            raise Internal(f"failed to parse certificate chain from response: {err}") from None
        roots = tuple(dict.fromkeys([chain[-1], *issuing.supplemental]))  # the root AWS chains to, first
        return UpstreamX509Ca(ca_chain=(certificate, *chain[:-1]), upstream_roots=roots)
