"""The UpstreamAuthority hooks: Vault's PKI engine signs the server's CA.

Each request sends the CSR to ``<pki_mount_point>/root/sign-intermediate`` with the subject
and URI SANs read from the CSR (Vault builds the certificate from the request's parameters,
not from the CSR's subject) and the server's ``ca_ttl``; Vault may cap that TTL at the mount's
``max_lease_ttl``, and the server then rotates sooner. Vault's answer is checked before the
server uses it: the certificate must be a CA for the CSR's key carrying the trust domain's
SPIFFE ID, and it must chain, link by link, to the root that goes into the bundle. As in
SPIRE, that root is the last certificate of Vault's ``ca_chain`` (or ``issuing_ca`` when
there is no chain).

Vault does not publish JWT keys, so this plugin is not for nested SPIRE with JWT-SVIDs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pyspire.plugin import Internal, InvalidArgument, UpstreamX509Ca, hookimpl
from pyspire.plugin.core_config import CoreConfig
from pyspire.spiffe.pem import pem_certificates

from pyspire_vault_upstream.config import VaultSettings, load_settings
from pyspire_vault_upstream.session import VaultSession

__all__ = ["VaultUpstreamAuthority"]

_log = logging.getLogger("pyspire.upstreamauthority.vault")


class VaultUpstreamAuthority:
    """Has HashiCorp Vault sign the server's intermediate CA."""

    def __init__(self) -> None:
        self._settings: VaultSettings | None = None
        self._session: VaultSession | None = None
        self._trust_domain_id = ""

    @property
    def session(self) -> VaultSession | None:
        """The Vault session (None until configured)."""
        return self._session

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        settings = load_settings(plugin_data)
        if settings.insecure_skip_verify:
            _log.warning("insecure_skip_verify is set: Vault's TLS certificate is not verified")
        if self._session is not None:
            self._session.close()
        self._settings = settings
        self._session = VaultSession(settings)
        self._trust_domain_id = core.trust_domain.id_string()

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        if self._session is None:
            raise Internal("not configured")
        request = _parse_csr(csr)
        uris = _uri_sans(request)
        if self._trust_domain_id not in uris:
            raise InvalidArgument(f"the CA request must name {self._trust_domain_id} as a URI SAN, has {uris}")
        payload: dict[str, Any] = {
            "csr": request.public_bytes(serialization.Encoding.PEM).decode(),
            "common_name": _attribute(request.subject, NameOID.COMMON_NAME),
            "organization": _attribute(request.subject, NameOID.ORGANIZATION_NAME),
            "country": _attribute(request.subject, NameOID.COUNTRY_NAME),
            "uri_sans": ",".join(uris),
            "format": "pem",
        }
        seconds = int(preferred_ttl.total_seconds())
        if seconds > 0:
            payload["ttl"] = f"{seconds}s"
        data = self._session.sign_intermediate(payload)
        return _upstream_ca(data, request, self._trust_domain_id)

    @hookimpl
    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _parse_csr(csr: bytes) -> x509.CertificateSigningRequest:
    try:
        request = x509.load_der_x509_csr(csr)
    except ValueError as err:
        raise InvalidArgument(f"the CA request is not a DER PKCS#10 CSR: {err}") from None
    if not request.is_signature_valid:
        raise InvalidArgument("the CA request's signature does not verify")
    return request


def _uri_sans(request: x509.CertificateSigningRequest) -> list[str]:
    try:
        names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    return ",".join(str(attribute.value) for attribute in name.get_attributes_for_oid(oid))


def _certificate(pem: object, field: str) -> x509.Certificate:
    if not isinstance(pem, str):
        raise Internal(f"the signing response's {field} is not a PEM string")
    try:
        return pem_certificates(pem.encode())[0]
    except ValueError as err:
        raise Internal(f"the signing response's {field} is not a PEM certificate: {err}") from None


def _public_der(certificate: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _upstream_ca(data: Mapping[str, Any], request: x509.CertificateSigningRequest, td_id: str) -> UpstreamX509Ca:
    """The server's CA and the roots above it, from Vault's answer, after checking it all."""
    certificate = _certificate(data.get("certificate"), "certificate")
    issuing_ca = _certificate(data.get("issuing_ca"), "issuing_ca")
    raw_chain = data.get("ca_chain") or []
    if not isinstance(raw_chain, list):
        raise Internal("the signing response's ca_chain is not a list")
    # Since Vault 1.11 the signed certificate itself heads ca_chain: it is not an issuer.
    issuers = [c for c in (_certificate(pem, "ca_chain") for pem in raw_chain) if c != certificate]
    root = issuers[-1] if issuers else issuing_ca
    intermediates = issuers[:-1]
    if _public_der(certificate) != _public_der(request):
        raise Internal("the signed certificate is not for the key in the request")
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise Internal("the signed certificate is not a CA (no basicConstraints CA:TRUE)")
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if td_id not in uris:
        raise Internal(f"the signed certificate does not carry {td_id} as a URI SAN")
    links = [certificate, *intermediates, root]
    for child, parent in itertools.pairwise(links):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise Internal(
                f'the chain does not verify: "{child.subject.rfc4514_string()}" '
                f'is not signed by "{parent.subject.rfc4514_string()}"'
            ) from None
    return UpstreamX509Ca(ca_chain=(certificate, *intermediates), upstream_roots=(root,))
