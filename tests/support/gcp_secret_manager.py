"""A small Secret Manager (REST v1) for tests, written from the API reference, that really stores.

It serves what ``google-cloud-secret-manager``'s REST transport asks of the secrets part of the
API: secrets (create with ``secretId``, get, delete with an optional ``etag`` precondition),
their versions (``addVersion``, ``access`` by number or ``latest``, list), and the secret's IAM
policy (``getIamPolicy``, ``setIamPolicy`` with etags that change on every write); plus an
OAuth token endpoint so a service account file whose ``token_uri`` points here authenticates
for real. Requests without a token it issued (or a JWT signed by one of its service accounts'
keys) are refused, as Google refuses them. Errors are the API's JSON errors (``NOT_FOUND``,
``ALREADY_EXISTS``, ``FAILED_PRECONDITION``...), label and ID rules are Secret Manager's.

Faults for the tests: ``fail`` maps an operation (``get``, ``create``, ``delete``,
``addVersion``, ``access``, ``getIamPolicy``, ``setIamPolicy``) to the HTTP status it answers
with; ``update_after_get`` gives a secret a new etag right after each ``GetSecret`` answer, as
if someone else updated it in between. ``calls`` records each operation served, in order, with the resource it named and the
query parameters sent (``etag`` of a delete, say).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google_crc32c
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["FakeSecretManager"]

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE"}  # fmt: skip
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_MAX_PAYLOAD = 64 * 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _ApiError(Exception):
    def __init__(self, code: int, message: str, status: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.status = status or _STATUS.get(code, "UNKNOWN")


@dataclass
class _Version:
    name: str
    data: bytes
    create_time: str = field(default_factory=_now)
    state: str = "ENABLED"

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "createTime": self.create_time, "state": self.state}


@dataclass
class _Secret:
    """A secret: its metadata, its versions (oldest first) and its IAM policy."""

    name: str
    labels: dict[str, str]
    replication: dict[str, Any]
    create_time: str = field(default_factory=_now)
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(7)}"')
    versions: list[_Version] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    policy_etag: bytes = field(default_factory=lambda: b"\x00" + secrets.token_bytes(7))
    policy_version: int = 0

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "replication": self.replication, "createTime": self.create_time,
                "labels": dict(self.labels), "etag": self.etag}  # fmt: skip

    def policy(self) -> dict[str, Any]:
        policy: dict[str, Any] = {"etag": base64.b64encode(self.policy_etag).decode()}
        if self.policy_version:
            policy["version"] = self.policy_version
        if self.bindings:
            policy["bindings"] = [dict(binding) for binding in self.bindings]
        return policy


class FakeSecretManager:
    """The fake Secret Manager on 127.0.0.1; ``url`` is its ``api_endpoint``."""

    def __init__(self) -> None:
        self.secrets: dict[str, _Secret] = {}
        self.fail: dict[str, int] = {}
        self.update_after_get = False
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self._tokens: set[str] = set()
        self._account_keys: list[rsa.RSAPublicKey] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget every secret, fault and recorded call (accounts and tokens stay valid)."""
        with self._lock:
            self.secrets.clear()
            self.fail.clear()
            self.update_after_get = False
            self.calls.clear()

    def service_account_file(
        self, directory: Path, email: str = "spire-agent@test-project.iam.gserviceaccount.com"
    ) -> Path:
        """A service account key file whose token endpoint is this fake."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self._account_keys.append(private.public_key())
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "test-project", "private_key_id": "1",
            "private_key": pem, "client_email": email, "client_id": "1",
            "token_uri": f"{self.url}/token",
        }))  # fmt: skip
        return path

    def create_secret(self, name: str, labels: dict[str, str], data: bytes | None = None) -> None:
        """A secret made behind the plugin's back (by someone else), with a first version holding ``data``."""
        with self._lock:
            secret = _Secret(name, dict(labels), {"automatic": {}})
            if data is not None:
                secret.versions.append(_Version(f"{name}/versions/1", data))
            self.secrets[name] = secret

    def latest_payload(self, name: str) -> bytes | None:
        """The newest enabled version's data of the secret ``name`` (None when absent or empty)."""
        with self._lock:
            secret = self.secrets.get(name)
            enabled = [v for v in secret.versions if v.state == "ENABLED"] if secret else []
            return enabled[-1].data if enabled else None

    # The API.

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        verb = path.rsplit(":", 1)[1] if ":" in path.rsplit("/", 1)[-1] else ""
        resource = path.removesuffix(f":{verb}") if verb else path
        operation = verb or {"POST": "create", "GET": "get", "DELETE": "delete"}.get(method, method)
        if found := re.fullmatch(r"projects/([^/]+)/secrets", resource):
            operation = "create" if method == "POST" else "list"
        elif re.fullmatch(r"projects/[^/]+/secrets/[^/]+/versions", resource):
            operation = "listVersions"
        self.calls.append((operation, resource, query))
        if operation in self.fail:
            raise _ApiError(self.fail[operation], f"injected failure of {operation}")
        if found := re.fullmatch(r"projects/([^/]+)/secrets", resource):
            if method != "POST":
                raise _ApiError(400, "listing secrets is not served by this fake")
            return self._create(resource, query.get("secretId", ""), body)
        if found := re.fullmatch(r"(projects/[^/]+/secrets/[^/]+)/versions", resource):
            secret = self._secret(found.group(1))
            return {"versions": [v.json() for v in reversed(secret.versions)], "totalSize": len(secret.versions)}
        if found := re.fullmatch(r"(projects/[^/]+/secrets/[^/]+)/versions/(\d+|latest)", resource):
            secret = self._secret(found.group(1))
            version = self._version(secret, found.group(2))
            if verb == "access":
                if version.state != "ENABLED":
                    raise _ApiError(400, f"{version.name} is in {version.state} state.", "FAILED_PRECONDITION")
                data = version.data
                return {"name": version.name, "payload": {"data": base64.b64encode(data).decode(),
                                                          "dataCrc32c": str(google_crc32c.value(data))}}  # fmt: skip
            return version.json()
        if re.fullmatch(r"projects/[^/]+/secrets/[^/]+", resource):
            secret = self._secret(resource)
            if verb == "addVersion":
                return self._add_version(secret, body)
            if verb == "getIamPolicy":
                return secret.policy()
            if verb == "setIamPolicy":
                return self._set_policy(secret, body.get("policy", {}))
            if method == "DELETE":
                etag = query.get("etag", "")
                if etag and etag != secret.etag:
                    raise _ApiError(400, f"The etag provided ({etag}) does not match the current etag.",
                                    "FAILED_PRECONDITION")  # fmt: skip
                del self.secrets[resource]
                return {}
            if method == "GET" and not verb:
                answer = secret.json()
                if self.update_after_get:
                    secret.etag = f'"{secrets.token_hex(7)}"'
                return answer
        raise _ApiError(404, f"no such resource {path}")

    def _secret(self, name: str) -> _Secret:
        secret = self.secrets.get(name)
        if secret is None:
            raise _ApiError(404, f"Secret [{name}] not found or has no versions.")
        return secret

    @staticmethod
    def _version(secret: _Secret, number: str) -> _Version:
        if number == "latest":
            enabled = [v for v in secret.versions if v.state == "ENABLED"]
            if not enabled:
                raise _ApiError(404, f"Secret [{secret.name}] not found or has no versions.")
            return enabled[-1]
        index = int(number)
        if not 1 <= index <= len(secret.versions):
            raise _ApiError(404, f"Secret Version [{secret.name}/versions/{number}] not found.")
        return secret.versions[index - 1]

    def _create(self, parent: str, secret_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if not _SECRET_ID.fullmatch(secret_id):
            raise _ApiError(400, f"Invalid secret_id: {secret_id!r}.")
        name = f"{parent}/{secret_id}"
        if name in self.secrets:
            raise _ApiError(409, f"Secret [{name}] already exists.")
        replication = body.get("replication") or {}
        if not ("automatic" in replication or "userManaged" in replication):
            raise _ApiError(400, "Secret.replication is required.")
        labels = dict(body.get("labels") or {})
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise _ApiError(400, f"Invalid label {key!r}: {value!r}.")
        secret = _Secret(name, labels, replication)
        self.secrets[name] = secret
        return secret.json()

    @staticmethod
    def _add_version(secret: _Secret, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("payload") or {}
        data = base64.b64decode(payload.get("data", ""))
        if len(data) > _MAX_PAYLOAD:
            raise _ApiError(400, "Secret payload exceeds 65536 bytes.")
        if "dataCrc32c" in payload and int(payload["dataCrc32c"]) != google_crc32c.value(data):
            raise _ApiError(400, "Checksum mismatch.")
        version = _Version(f"{secret.name}/versions/{len(secret.versions) + 1}", data)
        secret.versions.append(version)
        return version.json()

    @staticmethod
    def _set_policy(secret: _Secret, policy: dict[str, Any]) -> dict[str, Any]:
        etag = policy.get("etag")
        if etag and base64.b64decode(etag) != secret.policy_etag:
            raise _ApiError(409, "There were concurrent policy changes.", "ABORTED")
        bindings = []
        for binding in policy.get("bindings") or []:
            role, members = binding.get("role", ""), list(binding.get("members") or [])
            if not role.startswith("roles/"):
                raise _ApiError(400, f"Role {role} is not supported for this resource.")
            for member in members:
                if not re.fullmatch(r"(serviceAccount|user|group|domain):\S+@?\S*", member):
                    raise _ApiError(400, f"Invalid member {member!r}.")
            bindings.append({"role": role, "members": members})
        secret.bindings = bindings
        secret.policy_version = 1
        secret.policy_etag = b"\x00" + secrets.token_bytes(7)
        return secret.policy()

    def _authenticated(self, authorization: str) -> bool:
        """A token this fake issued, or a JWT self-signed by one of its service accounts' keys."""
        token = authorization.removeprefix("Bearer ")
        if token in self._tokens:
            return True
        parts = token.split(".")
        if len(parts) != 3:
            return False
        for public in self._account_keys:
            try:
                public.verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
            except (InvalidSignature, ValueError):
                continue
            return True
        return False

    # HTTP.

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path == "/token":
                    token = secrets.token_urlsafe(16)
                    fake._tokens.add(token)
                    self._answer(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
                    return
                query = {key: values[-1] for key, values in parse_qs(url.query).items()}
                try:
                    if not fake._authenticated(self.headers.get("Authorization", "")):
                        raise _ApiError(401, "Request had invalid authentication credentials.")
                    if not url.path.startswith("/v1/"):
                        raise _ApiError(404, f"no such resource {url.path}")
                    with fake._lock:
                        answer = fake._dispatch(method, url.path[4:], query, json.loads(raw or b"{}"))
                except _ApiError as err:
                    self._answer(err.code, {"error": {"code": err.code, "message": str(err), "status": err.status}})
                    return
                self._answer(200, answer)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler
