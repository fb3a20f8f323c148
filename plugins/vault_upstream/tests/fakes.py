"""A small HTTPS Vault for what the real OpenBao of the tests cannot be made to do.

Two things: answer a signing with a certificate a test has tampered with (a real server signs
correctly), and log in with a Kubernetes service account token (a real server would ask a
Kubernetes API to review it). It is built from Vault's HTTP API documentation and behaves as
OpenBao does where the plugin can see it: ``root/sign-intermediate`` signs past the end of
its CA with a warning rather than capping (``ca_chain`` headed by the issued certificate),
``auth/token/renew-self`` never takes a token past its max TTL and warns when it caps,
responses carry ``warnings``, and errors have Vault's ``{"errors": [...]}`` shape.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.support import http_fakes
from tests.support.pki import make_ca, make_tls_certificate, write_pem

_PAST_CA_WARNING = (
    "The expiration time for the signed certificate is after the CA's expiration time. If the new "
    "certificate is not treated as a root, validation paths with the certificate past the issuing "
    "CA's expiration time will fail."
)


@dataclass
class FakeToken:
    ttl: float
    """Seconds each issue or renewal grants."""
    renewable: bool
    expires_at: float
    max_expires_at: float
    """No renewal takes the token past this (its max TTL from issue)."""


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any]


def _duration(value: object) -> float:
    """Vault's TTL syntax: an integer number of seconds, or a Go-style duration like "24h"."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    if text.isdigit():
        return float(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return float(sum(int(n) * units[u] for n, u in parts))


class VaultServer:
    """The fake. ``start(directory)`` writes ``vault-ca.pem`` (trusts its TLS certificate)."""

    def __init__(self) -> None:
        self.pki_mount = "pki"
        self.max_lease_ttl = timedelta(days=30)
        self.issuer = make_ca(name="Vault Root CA", lifetime=timedelta(days=365))
        self.tokens: dict[str, FakeToken] = {}
        self.k8s_roles: dict[str, str] = {}  # role -> the service account JWT it accepts
        self.k8s_mount = "kubernetes"
        self.login_ttl = 3600.0
        self.token_max_ttl = 32 * 86400.0  # Vault's default max TTL
        self.requests: list[Request] = []
        self.signed: list[x509.Certificate] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- what tests set up --------------------------------------------------------------

    def issue_token(self, ttl: float = 3600.0, *, renewable: bool = True, max_ttl: float | None = None) -> str:
        token = "hvs." + secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self.tokens[token] = FakeToken(ttl, renewable, now + ttl, now + (max_ttl or self.token_max_ttl))
        return token

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, directory: Path) -> VaultServer:
        """Serve HTTPS on 127.0.0.1."""
        tls_ca = make_ca(name="Vault TLS CA")
        write_pem(make_tls_certificate(tls_ca), directory / "vault-tls.pem", directory / "vault-tls.key")
        (directory / "vault-ca.pem").write_bytes(tls_ca.certificate.public_bytes(serialization.Encoding.PEM))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "vault-tls.pem", directory / "vault-tls.key")
        self._server = http_fakes.serve(self._handler(), self.port, context)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
        self._server = None

    # --- the API ------------------------------------------------------------------------

    def _valid_token(self, token: str | None) -> FakeToken | None:
        with self._lock:
            info = self.tokens.get(token or "")
            if info is None or time.monotonic() >= info.expires_at:
                return None
            return info

    def _login_response(self, metadata: dict[str, str]) -> dict[str, Any]:
        token = self.issue_token(self.login_ttl)
        return {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "warnings": None,
            "auth": {
                "client_token": token,
                "accessor": secrets.token_hex(8),
                "policies": ["default", "spire"],
                "token_policies": ["default", "spire"],
                "metadata": metadata,
                "lease_duration": int(self.login_ttl),
                "renewable": True,
            },
        }

    def _renew(self, token: str, info: FakeToken) -> dict[str, Any]:
        if not info.renewable:
            raise _VaultError(400, "lease is not renewable")
        warnings = None
        with self._lock:
            now = time.monotonic()
            granted = min(info.ttl, info.max_expires_at - now)
            if granted < info.ttl:
                warnings = [
                    f'TTL of "{int(info.ttl)}s" exceeded the effective max_ttl of "{int(granted)}s"; '
                    "TTL value is capped accordingly"
                ]
            info.expires_at = now + granted
        return {
            "warnings": warnings,
            "auth": {"client_token": token, "policies": ["spire"], "lease_duration": int(granted), "renewable": True},
        }

    def sign_intermediate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Vault's ``data`` object for a signing."""
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
        except ValueError:
            raise _VaultError(400, "certificate request could not be parsed") from None
        if not csr.is_signature_valid:
            raise _VaultError(400, "request signature invalid")
        try:
            requested = _duration(body["ttl"]) if body.get("ttl") else self.max_lease_ttl.total_seconds()
        except ValueError as err:
            raise _VaultError(400, str(err)) from None
        now = datetime.now(UTC)
        # As OpenBao: capped by the mount's max lease TTL, not by the CA's own end (a warning says so).
        not_after = now + timedelta(seconds=min(requested, self.max_lease_ttl.total_seconds()))
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, body["common_name"])] if body.get("common_name") else []
        for oid, key in ((NameOID.ORGANIZATION_NAME, "organization"), (NameOID.COUNTRY_NAME, "country")):
            for value in filter(None, str(body.get(key, "")).split(",")):
                attributes.append(x509.NameAttribute(oid, value))
        uris = [x509.UniformResourceIdentifier(u) for u in filter(None, str(body.get("uri_sans", "")).split(","))]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.issuer.certificate.subject)
            .public_key(csr.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=30))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuer.key.public_key()), critical=False
            )
        )
        if uris:
            builder = builder.add_extension(x509.SubjectAlternativeName(uris), critical=False)
        certificate = builder.sign(self.issuer.key, hashes.SHA256())
        self.signed.append(certificate)

        def pem(cert: x509.Certificate) -> str:
            return cert.public_bytes(serialization.Encoding.PEM).decode().strip()

        return {
            "certificate": pem(certificate),
            "issuing_ca": pem(self.issuer.certificate),
            # Vault >= 1.11 puts the issued certificate first, then the issuer's chain.
            "ca_chain": [pem(certificate), pem(self.issuer.certificate)],
            "serial_number": format(certificate.serial_number, "x"),
            "expiration": int(not_after.timestamp()),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                http_fakes.send_json(self, code, body)

            def _route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                except json.JSONDecodeError:
                    return self._send(400, {"errors": ["failed to parse JSON input"]})
                path = self.path.split("?", 1)[0]
                vault.requests.append(Request(method, path, body if isinstance(body, dict) else {}))
                try:
                    code, response = vault._answer(method, path, body, self.headers.get("X-Vault-Token"))
                except _VaultError as err:
                    return self._send(err.code, {"errors": [err.message]})
                self._send(code, response)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("POST")

        return Handler

    def _answer(self, method: str, path: str, body: Any, token: str | None) -> tuple[int, dict[str, Any] | None]:
        if method == "POST" and path == f"/v1/auth/{self.k8s_mount}/login":
            role = body.get("role", "")
            if role not in self.k8s_roles:
                raise _VaultError(400, f'invalid role name "{role}"')
            if self.k8s_roles[role] != body.get("jwt"):
                raise _VaultError(403, "permission denied")
            return 200, self._login_response({"role": role, "service_account_name": "spire-server"})
        info = self._valid_token(token)
        if info is None or token is None:
            raise _VaultError(403, "permission denied")
        if method == "GET" and path == "/v1/auth/token/lookup-self":
            remaining = max(0, int(info.expires_at - time.monotonic()))
            return 200, {"data": {"id": token, "ttl": remaining, "renewable": info.renewable}, "warnings": None}
        if method == "POST" and path == "/v1/auth/token/renew-self":
            return 200, self._renew(token, info)
        if method == "POST" and path == f"/v1/{self.pki_mount}/root/sign-intermediate":
            data = self.sign_intermediate(body)
            past_ca = data["expiration"] > self.issuer.certificate.not_valid_after_utc.timestamp()
            warnings = [_PAST_CA_WARNING] if past_ca else None
            return 200, {"request_id": secrets.token_hex(8), "data": data, "warnings": warnings}
        raise _VaultError(404, f"no handler for route {path!r}. route entry not found.")


class _VaultError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
