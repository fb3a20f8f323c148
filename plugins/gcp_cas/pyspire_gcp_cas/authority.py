"""UpstreamAuthority ``gcp_cas``: Google Cloud Certificate Authority Service issues the server's CA.

Which CA signs is decided at every mint, as SPIRE decides it: the CAs of ``ca_pool`` (or of
every pool of the region) carrying the label ``label_key: label_value`` are listed, those not
ENABLED are set aside, and the one that expires first (create time plus lifetime) signs, so
a CA being retired is used up before its successor. Labelled CAs in more than one pool are
refused: which pool's trust the server would join is then a guess.

The certificate is created from a structured config, never from the CSR itself: the CSR's
public key, its subject's common name and first O, OU, L and ST, its URI SANs, CA=true with
no CA below it (path length 0) and keyCertSign + cRLSign. Its ID is the unpadded URL-safe
base64 of the SHA-256 of the public key (what the Enterprise tier requires, and the same ID
SPIRE gives the same key). Since CA Service never sees the CSR's signature, the plugin
checks it: a request not signed by its own key gets no certificate.

The chain CA Service returns ends with the signing CA's root: that root, and the root of
every other ENABLED labelled CA (they may sign the next CA), are the upstream roots; the
certificates before it follow the new CA in the chain the server serves. The server's core
then ends its CA no later than that chain (see docs/compatibility.md).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import google.auth
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud.security import privateca_v1
from pyspire.plugin import (
    AlreadyExists,
    CoreConfig,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PluginError,
    PluginLogger,
    Unavailable,
    Unimplemented,
    UpstreamX509Ca,
    hookimpl,
    parse_plugin_data,
)
from pyspire.plugin.upstream import JwtKey
from pyspire.spiffe.pem import pem_certificates

from pyspire_gcp_cas.config import GcpCasConfig, RootCertSpec

__all__ = ["GcpCasUpstreamAuthority", "certificate_id"]

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_PAGE_SIZE = 20
"""CAs and pools asked for per page (SPIRE's pager asks for as many)."""

# The REST transport lets requests' own errors through when CA Service cannot be reached at all.
_GoogleErrors = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException)

# CA Service's refusals, as the pyspire errors that carry the same gRPC status.
_BY_STATUS: Mapping[str, Callable[[str], PluginError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": PermissionDenied,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": Unavailable,
}

_Authority = privateca_v1.CertificateAuthority


class _MultiplePools(Exception):
    """Labelled CAs were found in more than one pool."""


def _cas_error(action: str, err: Exception) -> PluginError:
    """A failed CA Service call as the plugin reports it: Unavailable when CA Service was not reached."""
    if isinstance(err, (requests.RequestException, auth_exceptions.TransportError)):
        return Unavailable(f"{action}: cannot reach CA Service: {err}")
    if isinstance(err, api_exceptions.GoogleAPICallError):
        status, message = _status_of(err)
        return _BY_STATUS.get(status, Internal)(f"{action}: {status}: {message}")
    if isinstance(err, auth_exceptions.GoogleAuthError):
        return PermissionDenied(f"{action}: failed to authenticate to Google: {err}")
    return Internal(f"{action}: {err}")


def _status_of(err: api_exceptions.GoogleAPICallError) -> tuple[str, str]:
    """The status and message Google answered with.

    Over REST the exception's class follows the HTTP code alone, and several statuses share
    one (FAILED_PRECONDITION and INVALID_ARGUMENT are both 400): the error body names the
    status itself, and its message is without the method and URL the exception adds.
    """
    status = err.grpc_status_code.name if err.grpc_status_code is not None else f"HTTP {err.code}"
    message = err.message
    response: Any = err.response
    try:
        body = response.json()["error"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return status, message
    if not isinstance(body, dict):
        return status, message
    found_status, found_message = body.get("status"), body.get("message")
    return (
        found_status if isinstance(found_status, str) and found_status else status,
        found_message if isinstance(found_message, str) and found_message else message,
    )


def certificate_id(public_key_der: bytes) -> str:
    """The certificate ID of a CSR's key: unpadded URL-safe base64 of its SHA-256.

    It fits CA Service's ``[a-zA-Z0-9_-]{1,63}`` and is the same for the same key, as SPIRE's.
    """
    return base64.urlsafe_b64encode(hashlib.sha256(public_key_der).digest()).rstrip(b"=").decode()


def _expiry(authority: _Authority) -> float:
    """When a CA expires, as SPIRE reckons it: its create time plus its lifetime (POSIX seconds)."""
    # proto-plus hands Timestamp and Duration fields over as datetime and timedelta (None when unset).
    created: object = authority.create_time
    lifetime: object = authority.lifetime
    start = created.timestamp() if isinstance(created, datetime) else 0.0
    return start + (lifetime.total_seconds() if isinstance(lifetime, timedelta) else 0.0)


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def _uris(request: x509.CertificateSigningRequest) -> list[str]:
    try:
        names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def _certificate_config(request: x509.CertificateSigningRequest) -> privateca_v1.CertificateConfig:
    """The structured config of the server's CA: the CSR's key, subject and URIs; a CA that signs leaves only."""
    public_pem = request.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    subject = request.subject
    return privateca_v1.CertificateConfig(
        public_key=privateca_v1.PublicKey(key=public_pem, format_=privateca_v1.PublicKey.KeyFormat.PEM),
        subject_config=privateca_v1.CertificateConfig.SubjectConfig(
            subject=privateca_v1.Subject(
                common_name=_first(subject, NameOID.COMMON_NAME),
                organization=_first(subject, NameOID.ORGANIZATION_NAME),
                organizational_unit=_first(subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
                locality=_first(subject, NameOID.LOCALITY_NAME),
                province=_first(subject, NameOID.STATE_OR_PROVINCE_NAME),
            ),
            subject_alt_name=privateca_v1.SubjectAltNames(uris=_uris(request)),
        ),
        x509_config=privateca_v1.X509Parameters(
            ca_options=privateca_v1.X509Parameters.CaOptions(is_ca=True, max_issuer_path_length=0),
            key_usage=privateca_v1.KeyUsage(
                base_key_usage=privateca_v1.KeyUsage.KeyUsageOptions(cert_sign=True, crl_sign=True)
            ),
        ),
    )


def _parse_one(pem: str, what: str) -> x509.Certificate:
    try:
        [certificate] = pem_certificates(pem.encode())
    except ValueError as err:
        raise Internal(f"failed to parse {what}: {err}") from None
    return certificate


@dataclass(frozen=True)
class _Settings:
    """What every mint uses, settled at configure."""

    client: privateca_v1.CertificateAuthorityServiceClient
    spec: RootCertSpec


class GcpCasUpstreamAuthority:
    """Has Google Cloud CA Service issue the server's CA certificates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: _Settings | None = None
        self._logger: PluginLogger | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(GcpCasConfig, plugin_data).check()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(GcpCasConfig, plugin_data)
        config.check()
        if not config.root_cert_spec.ca_pool:
            logger.info(
                "The ca_pool value is not configured: every CA pool of the region is searched for matching CAs",
                extra={"region_name": config.root_cert_spec.region_name},
            )
        try:
            # Application Default Credentials, as SPIRE's client finds them.
            credentials, _ = google.auth.default(scopes=_SCOPES)
        except (OSError, ValueError, auth_exceptions.GoogleAuthError) as err:
            raise FailedPrecondition(f"failed to load Google Application Default Credentials: {err}") from None
        client = privateca_v1.CertificateAuthorityServiceClient(
            credentials=credentials, transport="rest", client_options=ClientOptions(api_endpoint=config.cas_endpoint)
        )
        # A client replaced by a new configure is left to the collector, not closed: a mint
        # that read the old settings may still be using it.
        with self._lock:
            self._settings, self._logger = _Settings(client, config.root_cert_spec), logger

    @hookimpl
    def close(self) -> None:
        with self._lock:
            previous, self._settings = self._settings, None
        if previous is not None:
            previous.client.transport.close()  # type: ignore[no-untyped-call]

    @hookimpl
    def publish_jwt_key(self, jwt_key: JwtKey) -> tuple[JwtKey, ...]:
        raise Unimplemented("publishing upstream is unsupported")

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        with self._lock:
            settings, logger = self._settings, self._logger
        if settings is None or logger is None:
            raise FailedPrecondition("not configured")
        try:
            request = x509.load_der_x509_csr(csr)
        except ValueError as err:
            raise InvalidArgument(f"unable to parse CSR: {err}") from None
        if not request.is_signature_valid:
            raise InvalidArgument("the CSR's signature does not verify")
        spec = settings.spec
        try:
            found = self._labelled_authorities(settings.client, spec)
        except _MultiplePools:
            raise Internal(
                "failed to load root CAs: found authorities with matching labels across multiple pools"
            ) from None
        except _GoogleErrors as err:
            raise _cas_error("failed to load root CAs", err) from None
        pair = f'"{spec.label_key}":"{spec.label_value}"'
        if not found:
            raise InvalidArgument(f"no certificate authorities found with label pair {pair}")
        # Only an ENABLED CA issues; the one that expires first signs (a stable sort, as listed on a tie).
        enabled = sorted((ca for ca in found if ca.state == _Authority.State.ENABLED), key=_expiry)
        if not enabled:
            raise InvalidArgument(f"no certificate authorities found in ENABLED state with label pair {pair}")
        chosen, others = enabled[0], enabled[1:]
        pool, _, authority_id = chosen.name.rpartition("/certificateAuthorities/")
        logger.info(
            "Minting X509 intermediate CA",
            extra={"ca_certificate": chosen.name, "ttl": preferred_ttl.total_seconds()},
        )
        key_der = request.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        create = privateca_v1.CreateCertificateRequest(
            parent=pool,
            certificate_id=certificate_id(key_der),
            issuing_certificate_authority_id=authority_id,
            certificate=privateca_v1.Certificate(lifetime=preferred_ttl, config=_certificate_config(request)),
        )
        try:
            issued = settings.client.create_certificate(request=create)
        except _GoogleErrors as err:
            raise _cas_error("failed to create certificate", err) from None
        minted = self._response(issued, others, key_der)
        logger.info("Successfully minted new X509", extra={"certificate": issued.name})
        return minted

    @staticmethod
    def _labelled_authorities(
        client: privateca_v1.CertificateAuthorityServiceClient, spec: RootCertSpec
    ) -> list[_Authority]:
        """The CAs of the configured pool (or of the region's pools) that carry the label; all in one pool."""
        if spec.ca_pool:
            pools: Iterable[str] = [f"{spec.location}/caPools/{spec.ca_pool}"]
        else:
            listed = client.list_ca_pools(
                request=privateca_v1.ListCaPoolsRequest(parent=spec.location, page_size=_PAGE_SIZE)
            )
            pools = [pool.name for pool in listed]
        found: list[_Authority] = []
        for pool in pools:
            listed_cas = client.list_certificate_authorities(
                request=privateca_v1.ListCertificateAuthoritiesRequest(
                    parent=pool, filter=spec.filter, page_size=_PAGE_SIZE
                )
            )
            in_pool = list(listed_cas)
            if in_pool and found:
                raise _MultiplePools
            found.extend(in_pool)
        return found

    @staticmethod
    def _response(issued: privateca_v1.Certificate, others: list[_Authority], key_der: bytes) -> UpstreamX509Ca:
        """The new CA, the chain up to (not including) its root, and the roots of every CA that may sign."""
        if not issued.pem_certificate_chain:
            raise Internal("got no certificates in the chain")
        certificate = _parse_one(issued.pem_certificate, "the issued certificate")
        # CA Service was given the key; a certificate for another key must not become the server's CA.
        if (
            certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            != key_der
        ):
            raise Internal("the issued certificate is not for the CSR's public key")
        chain = [_parse_one(pem, "the certificate chain") for pem in issued.pem_certificate_chain]
        roots = [chain[-1]]
        for other in others:
            # The last of a CA's certificates is its root: a labelled CA may be an intermediate,
            # which verifiers without partial chains (OpenSSL's default) do not take as an anchor.
            if not other.pem_ca_certificates:
                raise Internal(f"certificate authority {other.name} has no CA certificates")
            roots.append(_parse_one(other.pem_ca_certificates[-1], f"the CA certificates of {other.name}"))
        return UpstreamX509Ca(ca_chain=(certificate, *chain[:-1]), upstream_roots=tuple(dict.fromkeys(roots)))
