"""A fake Azure Key Vault and the Microsoft Entra token endpoint it trusts, over HTTPS on loopback.

Built from Key Vault's REST reference (keys, api-version 7.x): ``POST /keys/<name>/create``,
``GET /keys`` (key items: unversioned ``kid``, attributes, tags), ``GET /keys/<name>[/<version>]``,
``PATCH /keys/<name>/<version>`` (operations, tags; moves ``updated``), ``DELETE /keys/<name>``
and ``POST /keys/<name>/<version>/sign`` with a digest. Keys are real (``cryptography``): what
the fake signs verifies under the public key it answers, ECDSA as ``r || s`` as Key Vault does.

Like Key Vault, a request without a valid bearer token gets 401 with the challenge the Azure
SDK reads (``authorization`` the tenant's authority, ``resource``); only tokens Entra's token
endpoint issued for the tenant's app (client credentials with its secret) are accepted. The SDK
requires the vault host to lie under the challenge's resource domain (``<vault>.vault.azure.net``
under ``vault.azure.net``); the fake answers on ``127.0.0.1:<port>``, so its resource is
``https://0.1:<port>``, the same suffix rule.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.support import azure, http_fakes

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "d5b40d61-272e-48da-beb9-05f295c42bd6"
APP_ID = "12345678-1234-1234-1234-123456789012"
APP_SECRET = "app-secret"

_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_CURVES = {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48)}
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(number: int, size: int | None = None) -> bytes:
    return number.to_bytes(size or (number.bit_length() + 7) // 8, "big")


@dataclass
class VaultKey:
    """One version of a key: its private half, operations, tags and times."""

    name: str
    version: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    operations: list[str]
    tags: dict[str, str]
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))

    def jwk(self, base: str) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kid": f"{base}/keys/{self.name}/{self.version}", "key_ops": self.operations}
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.public_key().public_numbers()
            jwk.update(kty="RSA", n=_b64(_int_bytes(numbers.n)), e=_b64(_int_bytes(numbers.e)))
        else:
            point = self.private.public_key().public_numbers()
            crv = "P-256" if isinstance(self.private.curve, ec.SECP256R1) else "P-384"
            size = _CURVES[crv][1]
            jwk.update(kty="EC", crv=crv, x=_b64(_int_bytes(point.x, size)), y=_b64(_int_bytes(point.y, size)))
        return jwk

    def attributes(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "created": self.created, "updated": self.updated, "recoveryLevel": "Purgeable"}

    def bundle(self, base: str) -> dict[str, Any]:
        return {"key": self.jwk(base), "attributes": self.attributes(), "tags": self.tags}

    def sign(self, algorithm: str, digest: bytes) -> bytes:
        """Sign ``digest`` as Key Vault does for ``algorithm`` (ES*: r || s; RS*: PKCS #1 v1.5; PS*: PSS)."""
        chosen = _HASHES[algorithm[2:]]()
        prehashed = utils.Prehashed(chosen)
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            size = _CURVES["P-256" if isinstance(self.private.curve, ec.SECP256R1) else "P-384"][1]
            if not algorithm.startswith("ES") or len(digest) != size or chosen.digest_size != size:
                raise ValueError(f"algorithm {algorithm} with a {len(digest)}-byte digest does not fit this key")
            r, s = utils.decode_dss_signature(self.private.sign(digest, ec.ECDSA(prehashed)))
            return _int_bytes(r, size) + _int_bytes(s, size)
        if len(digest) != chosen.digest_size:
            raise ValueError(f"a {len(digest)}-byte digest is not a {algorithm} digest")
        if algorithm.startswith("RS"):
            return self.private.sign(digest, padding.PKCS1v15(), prehashed)
        if algorithm.startswith("PS"):
            return self.private.sign(digest, padding.PSS(padding.MGF1(chosen), chosen.digest_size), prehashed)
        raise ValueError(f"algorithm {algorithm} does not fit an RSA key")


class FakeKeyVault:
    """Key Vault and Entra's token endpoint on one HTTPS port, with a test CA to trust."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys: dict[str, list[VaultKey]] = {}
        self.deleted: list[str] = []
        self.issued: set[str] = set()
        self.fail: dict[str, int] = {}
        """Operation ("create", "list", "get", "update", "delete", "sign") -> HTTP status to answer it with."""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The vault URI (``key_vault_uri``) and Entra's authority at once."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What a process needs to trust the fake's TLS and to ask its Entra for tokens."""
        return {**azure.trust_env(self.directory), "AZURE_AUTHORITY_HOST": self.url}

    def plugin_data(self, **keys: Any) -> dict[str, Any]:
        """``plugin_data`` with the fake's vault and its tenant's app secret."""
        return {
            "key_vault_uri": self.url,
            "tenant_id": TENANT_ID,
            "subscription_id": SUBSCRIPTION_ID,
            "app_id": APP_ID,
            "app_secret": APP_SECRET,
            **keys,
        }

    def current(self, name: str) -> VaultKey:
        """The newest version of key ``name``."""
        return self.keys[name][-1]

    def public_der(self, name: str) -> bytes:
        return (
            self.current(name)
            .private.public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def start(self) -> FakeKeyVault:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                return json.loads(raw) if raw.strip().startswith(b"{") else {"form": raw.decode()}

            def _error(self, status: int, code: str, message: str) -> None:
                http_fakes.send_json(self, status, {"error": {"code": code, "message": message}})

            def _authorized(self) -> bool:
                if self.headers.get("Authorization", "").removeprefix("Bearer ") in fake.issued:
                    return True
                port = fake.url.rsplit(":", 1)[1]
                challenge = f'Bearer authorization="{fake.url}/{TENANT_ID}", resource="https://0.1:{port}"'
                data = json.dumps({"error": {"code": "Unauthorized", "message": "AKV10000"}}).encode()
                self.send_response(401)
                self.send_header("WWW-Authenticate", challenge)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return False

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                body = self._body() if method in ("POST", "PATCH") else {}
                if method == "GET" and url.path == f"/{TENANT_ID}/v2.0/.well-known/openid-configuration":
                    return http_fakes.send_json(self, 200, azure.openid_v2(fake.url, TENANT_ID))
                if method == "POST" and url.path == f"/{TENANT_ID}/oauth2/v2.0/token":
                    form = dict(urllib.parse.parse_qsl(body.get("form", "")))
                    if form.get("client_id") != APP_ID or form.get("client_secret") != APP_SECRET:
                        return http_fakes.send_json(self, 401, {"error": "invalid_client"})
                    token = secrets.token_urlsafe(24)
                    fake.issued.add(token)
                    return http_fakes.send_json(
                        self, 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
                    )
                if parts[0] != "keys" or "api-version" not in url.query:
                    return self._error(404, "NotFound", url.path)
                if not self._authorized():
                    return None
                with fake._lock:
                    return self._keys(method, parts[1:], body)

            def _keys(self, method: str, parts: list[str], body: dict[str, Any]) -> None:
                operation = {
                    ("GET", 0): "list",
                    ("POST", 2): "create" if parts[-1:] == ["create"] else "",
                    ("GET", 1): "get",
                    ("GET", 2): "get",
                    ("PATCH", 2): "update",
                    ("DELETE", 1): "delete",
                    ("POST", 3): "sign" if parts[-1:] == ["sign"] else "",
                }.get((method, len(parts)), "")
                if not operation:
                    return self._error(400, "BadParameter", f"{method} /keys/{'/'.join(parts)}")
                if operation in fake.fail:
                    return self._error(fake.fail[operation], "Forbidden", f"{operation} refused by the test")
                if operation == "list":
                    items = [
                        {
                            "kid": f"{fake.url}/keys/{name}",
                            "attributes": versions[-1].attributes(),
                            "tags": versions[-1].tags,
                        }
                        for name, versions in fake.keys.items()
                    ]
                    return http_fakes.send_json(self, 200, {"value": items, "nextLink": None})
                name = parts[0]
                if operation == "create":
                    return self._create(name, body)
                versions = fake.keys.get(name)
                if not versions:
                    return self._error(
                        404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault"
                    )
                if operation == "delete":
                    del fake.keys[name]
                    fake.deleted.append(name)
                    return http_fakes.send_json(self, 200, versions[-1].bundle(fake.url))
                version = parts[1] if len(parts) > 1 and parts[1] else versions[-1].version
                key = next((v for v in versions if v.version == version), None)
                if key is None:
                    return self._error(404, "KeyNotFound", f"key {name}/{version} not found")
                if operation == "get":
                    return http_fakes.send_json(self, 200, key.bundle(fake.url))
                if operation == "update":
                    key.operations = body.get("key_ops", key.operations)
                    key.tags = body.get("tags", key.tags)
                    key.updated = int(time.time())
                    return http_fakes.send_json(self, 200, key.bundle(fake.url))
                if not key.enabled or "sign" not in key.operations:
                    return self._error(403, "Forbidden", "Operation sign is not permitted on this key")
                try:
                    signature = key.sign(body.get("alg", ""), _unb64(body.get("value", "")))
                except (KeyError, ValueError) as err:
                    return self._error(400, "BadParameter", str(err))
                return http_fakes.send_json(self, 200, {"kid": key.jwk(fake.url)["kid"], "value": _b64(signature)})

            def _create(self, name: str, body: dict[str, Any]) -> None:
                if not _NAME.fullmatch(name):
                    return self._error(400, "BadParameter", "The request URI contains an invalid name")
                kty = body.get("kty")
                private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                if kty == "RSA" and body.get("key_size") in (2048, 3072, 4096):
                    private = rsa.generate_private_key(65537, body["key_size"])
                elif kty == "EC" and body.get("crv") in _CURVES:
                    private = ec.generate_private_key(_CURVES[body["crv"]][0])
                else:
                    return self._error(400, "BadParameter", f"unsupported key parameters {body}")
                key = VaultKey(name, uuid.uuid4().hex, private, body.get("key_ops", []), body.get("tags") or {})
                fake.keys.setdefault(name, []).append(key)
                return http_fakes.send_json(self, 200, key.bundle(fake.url))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        self._server = azure.serve_https(Handler, self.directory)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
