"""``UpstreamAuthority "cert-manager"``: SPIRE's CertificateRequest flow, checked before it is trusted.

For each CA the server prepares, as SPIRE's plugin does: create a CertificateRequest
(``generateName: spiffe-ca-``, labelled with the trust domain) for the configured issuer, with
the server's CSR, ``isCA``, the usages ``cert sign`` and ``crl sign`` and the server's
``ca_ttl`` as ``duration``; read it every 250 ms, up to 300 times (about 75 s), until it
carries a certificate, is denied (PermissionDenied) or has failed; take ``status.certificate``
as the chain and ``status.ca`` as the upstream roots. Afterwards, whatever happened, delete
this trust domain's requests that are finished (denied, signed or failed), as SPIRE does.

Before the server gets it, the answer is checked (a step SPIRE leaves to the server): the
certificate is for the CSR's key, is a CA allowed to sign certificates, and chains through
the returned intermediates to the returned CA. An issuer that answers anything else issues nothing here.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pyspire.config.duration import format_duration
from pyspire.plugin import CoreConfig, PluginLogger, UpstreamX509Ca, hookimpl, parse_plugin_data
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.spiffe.pem import pem_certificates

from pyspire_cert_manager.certificate_requests import TRUST_DOMAIN_LABEL, CertificateRequests, KubeError, condition

__all__ = ["CertManagerAuthority", "CertManagerConfig"]

POLL_INTERVAL_SECONDS = 0.25
POLL_ATTEMPTS = 300
DEFAULT_ISSUER_KIND = "Issuer"
DEFAULT_ISSUER_GROUP = "cert-manager.io"
_MAX_CHAIN = 10


@dataclass(frozen=True)
class CertManagerConfig:
    """``plugin_data`` of ``UpstreamAuthority "cert-manager"`` (SPIRE's keys)."""

    namespace: str = ""
    issuer_name: str = ""
    issuer_kind: str = ""
    issuer_group: str = ""
    kube_config_file: str = ""

    def checked(self) -> None:
        if not self.namespace:
            raise PluginConfigError("namespace", "plugin configuration has empty namespace property")
        if not self.issuer_name:
            raise PluginConfigError("issuer_name", "plugin configuration has empty issuer_name property")


def _config(plugin_data: Mapping[str, Any]) -> CertManagerConfig:
    config = parse_plugin_data(CertManagerConfig, plugin_data)
    config.checked()
    return config


def _public_der(item: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return item.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signs_certificates(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and usage.key_cert_sign


def _pem_field(request: Mapping[str, Any], name: str) -> list[x509.Certificate]:
    """``status.<name>``: base64 of PEM certificates; [] when absent."""
    value = (request.get("status") or {}).get(name)
    if not value:
        return []
    try:
        return pem_certificates(base64.b64decode(value, validate=True))
    except ValueError as err:
        raise Internal(f"failed to parse {'CA ' if name == 'ca' else ''}certificate: {err}") from None


def _parse_csr(csr: bytes) -> x509.CertificateSigningRequest:
    try:
        request = x509.load_der_x509_csr(csr)
    except ValueError as err:
        raise InvalidArgument(f"the CA request is not a DER PKCS#10 CSR: {err}") from None
    if not request.is_signature_valid:
        raise InvalidArgument("the CA request's signature does not verify")
    return request


def _checked(
    chain: list[x509.Certificate], roots: list[x509.Certificate], request: x509.CertificateSigningRequest
) -> UpstreamX509Ca:
    """The chain (without any root) and the roots, if the chain is for the CSR's key and leads to a root."""
    chain = [certificate for certificate in chain if certificate not in roots]
    if not chain:
        raise Internal("the issuer returned no certificate but its CA")
    if _public_der(chain[0]) != _public_der(request):
        raise Internal("the signed certificate is not for the key in the request")
    if not _signs_certificates(chain[0]):
        raise Internal("the signed certificate is not a CA that may sign certificates (isCA, cert sign)")
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            raise Internal(f"the returned chain is broken: {child.subject.rfc4514_string()} is not issued by the next")
    if len(chain) > _MAX_CHAIN or not any(_issued_by(chain[-1], root) for root in roots):
        raise Internal("the returned chain does not lead to the returned CA")
    return UpstreamX509Ca(ca_chain=tuple(chain), upstream_roots=tuple(roots))


class CertManagerAuthority:
    """Has the server's CA signed by a cert-manager issuer."""

    def __init__(self) -> None:
        self._config: CertManagerConfig | None = None
        self._requests: CertificateRequests | None = None
        self._trust_domain = ""
        self._logger: PluginLogger | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = _config(plugin_data)
        CertificateRequests.connect(config.kube_config_file, config.namespace)  # reads files; no request

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = _config(plugin_data)
        if not config.issuer_kind:
            logger.info(
                f"plugin configuration has empty issuer_kind property, defaulting to value '{DEFAULT_ISSUER_KIND}'"
            )
        if not config.issuer_group:
            logger.info(
                f"plugin configuration has empty issuer_group property, defaulting to value '{DEFAULT_ISSUER_GROUP}'"
            )
        self._requests = CertificateRequests.connect(config.kube_config_file, config.namespace)
        self._config = config
        self._trust_domain = str(core.trust_domain)
        self._logger = logger

    def _body(self, request: x509.CertificateSigningRequest, preferred_ttl: timedelta) -> dict[str, Any]:
        config = self._config
        assert config is not None
        return {
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {
                "generateName": "spiffe-ca-",
                "namespace": config.namespace,
                "labels": {TRUST_DOMAIN_LABEL: self._trust_domain},
            },
            "spec": {
                "duration": format_duration(timedelta(seconds=int(preferred_ttl.total_seconds()))),
                "issuerRef": {
                    "name": config.issuer_name,
                    "kind": config.issuer_kind or DEFAULT_ISSUER_KIND,
                    "group": config.issuer_group or DEFAULT_ISSUER_GROUP,
                },
                "request": base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode(),
                "isCA": True,
                "usages": ["cert sign", "crl sign"],
            },
        }

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        requests, logger = self._requests, self._logger
        assert requests is not None
        assert logger is not None
        request = _parse_csr(csr)
        try:
            return self._mint(requests, logger, request, preferred_ttl)
        finally:
            self._clean_up(requests, logger)

    def _mint(
        self,
        requests: CertificateRequests,
        logger: PluginLogger,
        request: x509.CertificateSigningRequest,
        preferred_ttl: timedelta,
    ) -> UpstreamX509Ca:
        try:
            created = requests.create(self._body(request, preferred_ttl))
        except KubeError as err:
            raise Internal(str(err)) from None
        name = created["metadata"]["name"]
        where = {"namespace": requests.namespace, "certificate_request": name}
        logger.info("Waiting for certificaterequest to be signed", extra=where)
        for _ in range(POLL_ATTEMPTS):
            time.sleep(POLL_INTERVAL_SECONDS)
            try:
                current = requests.get(name)
            except KubeError as err:
                raise Internal(str(err)) from None
            if denied := condition(current, "Denied", "True"):
                logger.error("Created CertificateRequest has been denied", extra={**where, **_why(denied)})
                raise PermissionDenied("request has been denied")
            if failed := condition(current, "Ready", "False", "Failed"):
                logger.error("Created CertificateRequest has failed", extra={**where, **_why(failed)})
                raise Internal("request has failed")
            if (current.get("status") or {}).get("certificate"):
                break
        else:
            logger.error("Failed to wait for CertificateRequest to become ready in time", extra=where)
            raise Internal("request did not become ready in time")
        chain = _pem_field(current, "certificate")
        roots = _pem_field(current, "ca")
        if not roots:
            logger.error("No CA certificate was populated in CertificateRequest so cannot build upstream roots")
            raise Internal("no upstream CA root returned from request")
        return _checked(chain, roots, request)

    def _clean_up(self, requests: CertificateRequests, logger: PluginLogger) -> None:
        """Delete this trust domain's finished requests; a failure is only logged, as in SPIRE."""
        logger.debug("Optimistically cleaning-up stale CertificateRequests")
        try:
            for name, ended in requests.finished(self._trust_domain):
                logger.debug(
                    "Deleting stale CertificateRequest", extra={"certificate_request": name, "type": ended.get("type")}
                )
                requests.delete(name)
        except KubeError as err:
            logger.error("Failed to optimistically clean-up stale CertificateRequests", extra={"error": str(err)})


def _why(found: Mapping[str, Any]) -> dict[str, str]:
    # "condition_message": "message" is a field every log record has.
    return {"reason": str(found.get("reason", "")), "condition_message": str(found.get("message", ""))}
