"""What the Azure fakes share: serving over HTTPS with a test CA the clients under test trust, and
the tenant's OpenID configuration MSAL reads before it asks the token endpoint.

Azure's SDKs send bearer tokens over TLS only, so every fake that stands in for Entra, Resource
Manager or Key Vault serves HTTPS; the processes under test trust its CA through
``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` (Python's ssl and requests read them).
"""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.support import http_fakes
from tests.support.pki import make_ca, make_tls_certificate, write_pem

CA_FILE = "azure-fake-ca.pem"


def serve_https(handler: type[BaseHTTPRequestHandler], directory: Path) -> ThreadingHTTPServer:
    """Serve ``handler`` over HTTPS on loopback, its CA written to ``directory / CA_FILE``."""
    tls_ca = make_ca(name="azure fake TLS CA")
    (directory / CA_FILE).write_bytes(tls_ca.certificate.public_bytes(serialization.Encoding.PEM))
    write_pem(make_tls_certificate(tls_ca), directory / "azure-tls.pem", directory / "azure-tls.key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "azure-tls.pem", directory / "azure-tls.key")
    return http_fakes.serve(handler, tls=context)


def trust_env(directory: Path) -> dict[str, str]:
    """The environment that makes a process trust the fakes served from ``directory``."""
    ca_file = str(directory / CA_FILE)
    return {"SSL_CERT_FILE": ca_file, "REQUESTS_CA_BUNDLE": ca_file}


def openid_v2(base: str, tenant_id: str) -> dict[str, Any]:
    """The tenant's v2.0 OpenID configuration, its endpoints under the fake's ``base`` URL."""
    authority = f"{base}/{tenant_id}"
    return {
        "issuer": f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
        "token_endpoint": f"{authority}/oauth2/v2.0/token",
        "jwks_uri": f"{authority}/discovery/v2.0/keys",
        "tenant_region_scope": "NA",
    }
