"""One fetch of a partner's bundle from its bundle endpoint, authenticated as its profile says.

``https_web``: the endpoint's certificate must verify against the system's WebPKI roots (or
``SSL_CERT_FILE``) for the URL's host name. ``https_spiffe``: it must verify against the
bundle already held for the endpoint's trust domain and carry exactly the configured
SPIFFE ID — checked right after the handshake, before the request is sent. Redirects are
followed (a few, https only) under the same rules. The answer must be a SPIFFE bundle no
larger than :data:`MAX_BUNDLE_BYTES`. Blocking: run it in a worker thread.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.plugin.records import FederationRelationship
from pyspire.spiffe import Bundle, BundleError, SpiffeId, TrustDomain
from pyspire.spiffe.pem import der_certificate

__all__ = ["FetchError", "endpoint_trust_domain", "fetch_bundle"]

MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_REDIRECTS = 3
TIMEOUT = 10.0


class FetchError(Exception):
    """The bundle could not be fetched or was not acceptable; the message says why."""


def fetch_bundle(
    relationship: FederationRelationship,
    endpoint_roots: Sequence[x509.Certificate] = (),
    *,
    timeout: float = TIMEOUT,
) -> Bundle:
    """Fetch ``relationship.trust_domain``'s bundle.

    ``endpoint_roots`` are the X.509 authorities of the endpoint SPIFFE ID's trust domain
    (required for ``https_spiffe``, unused for ``https_web``).
    """
    url = relationship.bundle_endpoint_url
    context = _context(relationship, endpoint_roots)
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get(url, context, relationship.endpoint_spiffe_id, timeout)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            if urlsplit(url).scheme != "https":
                raise FetchError(f"the bundle endpoint redirected to a non-https URL {url}")
            continue
        if status != 200:
            raise FetchError(f"{url} answered HTTP {status}")
        try:
            return Bundle.parse(relationship.trust_domain, body)
        except BundleError as err:
            raise FetchError(f"{url} did not serve a valid SPIFFE bundle: {err}") from None
    raise FetchError(f"{relationship.bundle_endpoint_url}: more than {MAX_REDIRECTS} redirects")


def _context(relationship: FederationRelationship, endpoint_roots: Sequence[x509.Certificate]) -> ssl.SSLContext:
    if relationship.profile == "https_web":
        context = ssl.create_default_context()
    else:
        if relationship.endpoint_spiffe_id is None:
            raise FetchError("the https_spiffe profile needs the endpoint's SPIFFE ID")
        if not endpoint_roots:
            raise FetchError(
                f"no bundle for {relationship.endpoint_spiffe_id.trust_domain} to authenticate its endpoint: "
                "set it first (bundle set, or trust_domain_bundle in the relationship)"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the SPIFFE ID is checked instead of the host name
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(
            cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in endpoint_roots)
        )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _get(url: str, context: ssl.SSLContext, expected_id: SpiffeId | None, timeout: float) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError(f"{url} is not an https URL")
    connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=context, timeout=timeout)
    try:
        try:
            connection.connect()
        except ssl.SSLCertVerificationError as err:
            raise FetchError(f"{url}: the endpoint's certificate does not verify: {err.verify_message}") from None
        if expected_id is not None:
            _check_spiffe_id(connection, expected_id, url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(MAX_BUNDLE_BYTES + 1)
        if len(body) > MAX_BUNDLE_BYTES:
            raise FetchError(f"{url}: the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
        return response.status, response.getheader("Location") or "", body
    except (OSError, http.client.HTTPException) as err:
        raise FetchError(f"{url}: {err or type(err).__name__}") from None
    finally:
        connection.close()


def _check_spiffe_id(connection: http.client.HTTPSConnection, expected: SpiffeId, url: str) -> None:
    sock = connection.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    if not der:
        raise FetchError(f"{url}: the endpoint presented no certificate")
    try:
        sans = der_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = sans.value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        uris = []
    if uris != [str(expected)]:
        raise FetchError(f"{url}: the endpoint is {', '.join(uris) or 'not a SPIFFE ID'}, expected {expected}")


def endpoint_trust_domain(relationship: FederationRelationship) -> TrustDomain | None:
    """Whose bundle authenticates the endpoint (``https_spiffe`` only)."""
    return relationship.endpoint_spiffe_id.trust_domain if relationship.endpoint_spiffe_id else None
