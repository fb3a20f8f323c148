"""Google's side for the gcp_iit tests, built from its documentation and served on loopback.

One HTTP server plays four documented endpoints:

- the metadata server's ``instance/service-accounts/<sa>/identity`` (``Metadata-Flavor: Google``
  required; ``format=full`` adds the ``google.compute_engine`` claim);
- ``oauth2/v1/certs``: key ID -> PEM certificate of the keys that sign identity tokens;
- an OAuth 2.0 token endpoint for service-account JWT-bearer grants (the assertion is checked
  against the service account's key);
- Compute Engine's ``instances.get``, answering only with a token the endpoint above issued.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support import http_fakes

AUDIENCE = "spire-gcp-node-attestor"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
"""The audience of service-account assertions, whatever endpoint they are posted to."""


def _self_signed(key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


class SigningKey:
    """A key that signs identity tokens, with the certificate Google would publish for it."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate_pem = _self_signed(self.key, key_id).public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class ComputeInstance:
    project_id: str = "project-123"
    project_number: int = 123456789012
    zone: str = "us-west1-b"
    instance_id: str = "5511237012345678901"
    name: str = "blog-server"
    email: str = "123456789-compute@developer.gserviceaccount.com"
    tags: list[str] = field(default_factory=lambda: ["http-server", "blog"])
    labels: dict[str, str] = field(default_factory=lambda: {"env": "prod", "team": "web"})
    metadata: dict[str, str | None] = field(default_factory=lambda: {"role": "frontend", "startup-script": "x" * 500})

    def claims(
        self, audience: str = AUDIENCE, *, lifetime: int = 3600, full: bool = True, **extra: Any
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": "100000000000000000000",
            "sub": "100000000000000000000",
            "email": self.email,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime,
        }
        if full:
            claims["google"] = {
                "compute_engine": {
                    "project_id": self.project_id,
                    "project_number": self.project_number,
                    "zone": self.zone,
                    "instance_id": self.instance_id,
                    "instance_name": self.name,
                    "instance_creation_timestamp": now - 86400,
                }
            }
        claims.update(extra)
        return claims

    def api_resource(self) -> dict[str, Any]:
        return {
            "kind": "compute#instance",
            "id": self.instance_id,
            "name": self.name,
            "zone": f"https://www.googleapis.com/compute/v1/projects/{self.project_id}/zones/{self.zone}",
            "tags": {"items": self.tags},
            "labels": self.labels,
            "metadata": {"items": [{"key": k, "value": v} for k, v in self.metadata.items()]},
        }


def sign_token(key: SigningKey, claims: dict[str, Any], *, algorithm: str = "RS256") -> str:
    return jwt.encode(claims, key.key, algorithm=algorithm, headers={"kid": key.key_id})


@dataclass
class GoogleFake:
    """The four endpoints on 127.0.0.1; tests change its fields as Google would change."""

    instance: ComputeInstance = field(default_factory=ComputeInstance)
    signing_keys: list[SigningKey] = field(default_factory=lambda: [SigningKey("key-1")])
    service_account_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    certs_max_age: int = 300
    compute_down: bool = False
    requests: list[str] = field(default_factory=list)
    _access_tokens: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://")

    @property
    def certs_url(self) -> str:
        return f"{self.base}/oauth2/v1/certs"

    def token(self, **claims: Any) -> str:
        return sign_token(self.signing_keys[0], self.instance.claims(**claims))

    def service_account_file(self, directory: Path) -> Path:
        path = directory / "service-account.json"
        pem = self.service_account_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.instance.project_id,
                    "private_key_id": "sa-key-1",
                    "private_key": pem,
                    "client_email": "spire-server@project-123.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{self.base}/token",
                }
            )
        )
        return path

    def start(self) -> GoogleFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                fake.requests.append(url.path)
                if url.path.startswith("/computeMetadata/v1/instance/service-accounts/"):
                    return self._identity(url)
                if url.path == "/oauth2/v1/certs":
                    certs = {k.key_id: k.certificate_pem for k in fake.signing_keys}
                    return self._send(
                        200, json.dumps(certs), {"Cache-Control": f"public, max-age={fake.certs_max_age}"}
                    )
                if url.path.startswith("/compute/v1/projects/"):
                    return self._compute(url.path)
                self._send(404)

            def _identity(self, url: urllib.parse.SplitResult) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._send(403, "Missing Metadata-Flavor:Google header")
                query = urllib.parse.parse_qs(url.query)
                audience = query.get("audience", [""])[0]
                if not audience:
                    return self._send(400, "audience is required")
                full = query.get("format", [""])[0] == "full"
                claims = fake.instance.claims(audience, full=full)
                self._send(200, sign_token(fake.signing_keys[0], claims))

            def _compute(self, path: str) -> None:
                if fake.compute_down:
                    return self._send(503)
                authorization = self.headers.get("Authorization", "")
                if authorization.removeprefix("Bearer ") not in fake._access_tokens:
                    return self._send(401)
                instance = fake.instance
                expected = (
                    f"/compute/v1/projects/{instance.project_id}/zones/{instance.zone}/instances/{instance.instance_id}"
                )
                if path != expected:
                    return self._send(404)
                self._send(200, json.dumps(instance.api_resource()), {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                fake.requests.append(self.path)
                if self.path != "/token":
                    return self._send(404)
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                    return self._send(400, json.dumps({"error": "unsupported_grant_type"}))
                try:
                    jwt.decode(
                        form["assertion"][0],
                        fake.service_account_key.public_key(),
                        algorithms=["RS256"],
                        audience=GOOGLE_TOKEN_AUDIENCE,
                    )
                except (jwt.PyJWTError, KeyError):
                    return self._send(400, json.dumps({"error": "invalid_grant"}))
                access_token = secrets.token_urlsafe(16)
                fake._access_tokens.add(access_token)
                body = {"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"}
                self._send(200, json.dumps(body), {"Content-Type": "application/json"})

        self._server = http_fakes.serve(Handler)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
