"""A small HTTPS Vault for the vault_upstream tests, built from Vault's HTTP API documentation.

It serves what the plugin uses: ``auth/token/lookup-self`` and ``auth/token/renew-self``, the
AppRole, TLS certificate and Kubernetes ``login`` endpoints on their mounts, and the PKI
engine's ``root/sign-intermediate``, which really signs: with its own root, or with an
intermediate under an offline root when ``pki_is_intermediate`` (then ``ca_chain`` carries
both, as Vault's does). Tokens have leases that expire and can be renewed; responses and
error bodies (``{"errors": [...]}``) have Vault's shapes. The server can be stopped and
started again on the same port, or sealed (503), to play an outage.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.support import http_fakes
from tests.support.pki import Issued, make_ca, make_tls_certificate, write_pem


@dataclass
class FakeToken:
    ttl: float
    """Seconds each issue or renewal grants; 0 = never expires."""
    renewable: bool
    expires_at: float | None
    policies: list[str] = field(default_factory=lambda: ["spire"])


@dataclass
class Request:
    method: str
    path: str
    namespace: str | None
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
    """The fake Vault. ``start(directory)`` writes ``vault-ca.pem`` (trusts its TLS certificate)."""

    def __init__(self, *, pki_mount: str = "pki", pki_is_intermediate: bool = False, namespace: str = "") -> None:
        self.pki_mount = pki_mount
        self.namespace = namespace
        self.max_ttl = timedelta(days=30)
        self.offline_root: Issued | None = None
        root = make_ca(name="Vault Root CA", lifetime=timedelta(days=365))
        if pki_is_intermediate:
            self.offline_root = root
            self.issuer = make_ca(issuer=root, name="Vault Intermediate CA", lifetime=timedelta(days=180))
        else:
            self.issuer = root
        self.tokens: dict[str, FakeToken] = {}
        self.approles: dict[str, str] = {}  # role_id -> secret_id (mount "approle")
        self.approle_mount = "approle"
        self.k8s_roles: dict[str, str] = {}  # role -> the service account JWT it accepts
        self.k8s_mount = "kubernetes"
        self.cert_mount = "cert"
        self.login_ttl = 3600.0
        self.login_renewable = True
        self.sealed = False
        self.requests: list[Request] = []
        self.renewals = 0
        self.signed: list[x509.Certificate] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- what tests set up --------------------------------------------------------------

    @property
    def root(self) -> x509.Certificate:
        """The certificate SVIDs must chain to."""
        return (self.offline_root or self.issuer).certificate

    def issue_token(self, ttl: float = 3600.0, *, renewable: bool = True) -> str:
        token = "hvs." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = FakeToken(ttl, renewable, time.monotonic() + ttl if ttl else None)
        return token

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, directory: Path) -> VaultServer:
        """Serve HTTPS on 127.0.0.1 (the same port again after :meth:`stop`)."""
        if not (directory / "vault-ca.pem").exists():
            tls_ca = make_ca(name="Vault TLS CA")
            write_pem(make_tls_certificate(tls_ca), directory / "vault-tls.pem", directory / "vault-tls.key")
            (directory / "vault-ca.pem").write_bytes(tls_ca.certificate.public_bytes(serialization.Encoding.PEM))
            self.client_ca = make_ca(name="Vault client CA")
            (directory / "client-ca.pem").write_bytes(
                self.client_ca.certificate.public_bytes(serialization.Encoding.PEM)
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "vault-tls.pem", directory / "vault-tls.key")
        context.load_verify_locations(directory / "client-ca.pem")
        context.verify_mode = ssl.CERT_OPTIONAL  # as Vault's listener: a client certificate only for cert auth
        ThreadingHTTPServer.allow_reuse_address = True  # started again on the same port after an outage
        self._server = http_fakes.serve(self._handler(), self.port, context)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
        self._server = None

    def client_certificate(self, directory: Path) -> tuple[Path, Path]:
        """A client certificate Vault's cert auth accepts, as PEM files."""
        return write_pem(make_tls_certificate(self.client_ca), directory / "client.pem", directory / "client.key")

    # --- the API ------------------------------------------------------------------------

    def _valid_token(self, token: str | None) -> FakeToken | None:
        with self._lock:
            info = self.tokens.get(token or "")
            if info is None or (info.expires_at is not None and time.monotonic() >= info.expires_at):
                return None
            return info

    def _login_response(self, metadata: dict[str, str]) -> dict[str, Any]:
        token = self.issue_token(self.login_ttl, renewable=self.login_renewable)
        return {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "auth": {
                "client_token": token,
                "accessor": secrets.token_hex(8),
                "policies": ["default", "spire"],
                "token_policies": ["default", "spire"],
                "metadata": metadata,
                "lease_duration": int(self.login_ttl),
                "renewable": self.login_renewable,
            },
        }

    def sign_intermediate(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
        except ValueError:
            raise _VaultError(400, "certificate request could not be parsed") from None
        if not csr.is_signature_valid:
            raise _VaultError(400, "request signature invalid")
        try:
            requested = _duration(body["ttl"]) if body.get("ttl") else self.max_ttl.total_seconds()
        except ValueError as err:
            raise _VaultError(400, str(err)) from None
        now = datetime.now(UTC)
        not_after = min(
            now + timedelta(seconds=min(requested, self.max_ttl.total_seconds())),
            self.issuer.certificate.not_valid_after_utc,
        )
        # The subject comes from the request's fields, not the CSR's (use_csr_values is off);
        # sign-intermediate does not require a common name.
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

        issuers = [self.issuer.certificate] + ([self.offline_root.certificate] if self.offline_root else [])
        return {
            "certificate": pem(certificate),
            "issuing_ca": pem(self.issuer.certificate),
            # Vault >= 1.11 puts the issued certificate first, then the issuer's chain.
            "ca_chain": [pem(certificate), *(pem(c) for c in issuers)],
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
                namespace = self.headers.get("X-Vault-Namespace")
                path = self.path.split("?", 1)[0]
                vault.requests.append(Request(method, path, namespace, body if isinstance(body, dict) else {}))
                if vault.sealed:
                    return self._send(503, {"errors": ["Vault is sealed"]})
                if vault.namespace and (namespace or "").strip("/") != vault.namespace:
                    return self._send(404, {"errors": [f"no handler for route {path!r}. route entry not found."]})
                try:
                    code, response = vault._answer(method, path, body, self.headers.get("X-Vault-Token"), self)
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

    def _answer(
        self, method: str, path: str, body: Any, token: str | None, handler: BaseHTTPRequestHandler
    ) -> tuple[int, dict[str, Any] | None]:
        if method == "POST" and path == f"/v1/auth/{self.approle_mount}/login":
            if self.approles.get(body.get("role_id", "")) != body.get("secret_id") or not body.get("secret_id"):
                raise _VaultError(400, "invalid role or secret ID")
            return 200, self._login_response({"role_name": "spire"})
        if method == "POST" and path == f"/v1/auth/{self.k8s_mount}/login":
            role = body.get("role", "")
            if role not in self.k8s_roles:
                raise _VaultError(400, f'invalid role name "{role}"')
            if self.k8s_roles[role] != body.get("jwt"):
                raise _VaultError(403, "permission denied")
            return 200, self._login_response({"role": role, "service_account_name": "spire-server"})
        if method == "POST" and path == f"/v1/auth/{self.cert_mount}/login":
            peer = handler.connection.getpeercert()  # type: ignore[attr-defined]
            if not peer:
                raise _VaultError(400, "client certificate must be supplied")
            return 200, self._login_response({"cert_name": body.get("name") or "web"})
        info = self._valid_token(token)
        if info is None:
            raise _VaultError(403, "permission denied")
        if method == "GET" and path == "/v1/auth/token/lookup-self":
            remaining = 0 if info.expires_at is None else max(0, int(info.expires_at - time.monotonic()))
            return 200, {
                "data": {"id": token, "ttl": remaining, "renewable": info.renewable, "policies": info.policies}
            }
        if method == "POST" and path == "/v1/auth/token/renew-self":
            if not info.renewable:
                raise _VaultError(400, "lease is not renewable")
            with self._lock:
                info.expires_at = time.monotonic() + info.ttl
                self.renewals += 1
            return 200, {
                "auth": {
                    "client_token": token,
                    "policies": info.policies,
                    "lease_duration": int(info.ttl),
                    "renewable": True,
                }
            }
        if method == "POST" and path == f"/v1/{self.pki_mount}/root/sign-intermediate":
            return 200, {"request_id": secrets.token_hex(8), "data": self.sign_intermediate(body)}
        raise _VaultError(404, f"no handler for route {path!r}. route entry not found.")


class _VaultError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
