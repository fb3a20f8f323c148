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
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import google_crc32c

from tests.support.google_api import ApiError, GoogleRestFake

__all__ = ["FakeSecretManager"]

_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_MAX_PAYLOAD = 64 * 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


class FakeSecretManager(GoogleRestFake):
    """The fake Secret Manager on 127.0.0.1; ``url`` is its ``api_endpoint``."""

    default_account = "spire-agent@test-project.iam.gserviceaccount.com"

    def __init__(self) -> None:
        self.secrets: dict[str, _Secret] = {}
        self.fail: dict[str, int] = {}
        self.update_after_get = False
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        super().__init__()

    def reset(self) -> None:
        """Forget every secret, fault and recorded call (accounts and tokens stay valid)."""
        with self.lock:
            self.secrets.clear()
            self.fail.clear()
            self.update_after_get = False
            self.calls.clear()

    def create_secret(self, name: str, labels: dict[str, str], data: bytes | None = None) -> None:
        """A secret made behind the plugin's back (by someone else), with a first version holding ``data``."""
        with self.lock:
            secret = _Secret(name, dict(labels), {"automatic": {}})
            if data is not None:
                secret.versions.append(_Version(f"{name}/versions/1", data))
            self.secrets[name] = secret

    def latest_payload(self, name: str) -> bytes | None:
        """The newest enabled version's data of the secret ``name`` (None when absent or empty)."""
        with self.lock:
            secret = self.secrets.get(name)
            enabled = [v for v in secret.versions if v.state == "ENABLED"] if secret else []
            return enabled[-1].data if enabled else None

    # The API.

    def dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        verb = path.rsplit(":", 1)[1] if ":" in path.rsplit("/", 1)[-1] else ""
        resource = path.removesuffix(f":{verb}") if verb else path
        operation = verb or {"POST": "create", "GET": "get", "DELETE": "delete"}.get(method, method)
        if found := re.fullmatch(r"projects/([^/]+)/secrets", resource):
            operation = "create" if method == "POST" else "list"
        elif re.fullmatch(r"projects/[^/]+/secrets/[^/]+/versions", resource):
            operation = "listVersions"
        self.calls.append((operation, resource, query))
        if operation in self.fail:
            raise ApiError(self.fail[operation], f"injected failure of {operation}")
        if found := re.fullmatch(r"projects/([^/]+)/secrets", resource):
            if method != "POST":
                raise ApiError(400, "listing secrets is not served by this fake")
            return self._create(resource, query.get("secretId", ""), body)
        if found := re.fullmatch(r"(projects/[^/]+/secrets/[^/]+)/versions", resource):
            secret = self._secret(found.group(1))
            return {"versions": [v.json() for v in reversed(secret.versions)], "totalSize": len(secret.versions)}
        if found := re.fullmatch(r"(projects/[^/]+/secrets/[^/]+)/versions/(\d+|latest)", resource):
            secret = self._secret(found.group(1))
            version = self._version(secret, found.group(2))
            if verb == "access":
                if version.state != "ENABLED":
                    raise ApiError(400, f"{version.name} is in {version.state} state.", "FAILED_PRECONDITION")
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
                    raise ApiError(400, f"The etag provided ({etag}) does not match the current etag.",
                                    "FAILED_PRECONDITION")  # fmt: skip
                del self.secrets[resource]
                return {}
            if method == "GET" and not verb:
                answer = secret.json()
                if self.update_after_get:
                    secret.etag = f'"{secrets.token_hex(7)}"'
                return answer
        raise ApiError(404, f"no such resource {path}")

    def _secret(self, name: str) -> _Secret:
        secret = self.secrets.get(name)
        if secret is None:
            raise ApiError(404, f"Secret [{name}] not found or has no versions.")
        return secret

    @staticmethod
    def _version(secret: _Secret, number: str) -> _Version:
        if number == "latest":
            enabled = [v for v in secret.versions if v.state == "ENABLED"]
            if not enabled:
                raise ApiError(404, f"Secret [{secret.name}] not found or has no versions.")
            return enabled[-1]
        index = int(number)
        if not 1 <= index <= len(secret.versions):
            raise ApiError(404, f"Secret Version [{secret.name}/versions/{number}] not found.")
        return secret.versions[index - 1]

    def _create(self, parent: str, secret_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if not _SECRET_ID.fullmatch(secret_id):
            raise ApiError(400, f"Invalid secret_id: {secret_id!r}.")
        name = f"{parent}/{secret_id}"
        if name in self.secrets:
            raise ApiError(409, f"Secret [{name}] already exists.")
        replication = body.get("replication") or {}
        if not ("automatic" in replication or "userManaged" in replication):
            raise ApiError(400, "Secret.replication is required.")
        labels = dict(body.get("labels") or {})
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise ApiError(400, f"Invalid label {key!r}: {value!r}.")
        secret = _Secret(name, labels, replication)
        self.secrets[name] = secret
        return secret.json()

    @staticmethod
    def _add_version(secret: _Secret, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("payload") or {}
        data = base64.b64decode(payload.get("data", ""))
        if len(data) > _MAX_PAYLOAD:
            raise ApiError(400, "Secret payload exceeds 65536 bytes.")
        if "dataCrc32c" in payload and int(payload["dataCrc32c"]) != google_crc32c.value(data):
            raise ApiError(400, "Checksum mismatch.")
        version = _Version(f"{secret.name}/versions/{len(secret.versions) + 1}", data)
        secret.versions.append(version)
        return version.json()

    @staticmethod
    def _set_policy(secret: _Secret, policy: dict[str, Any]) -> dict[str, Any]:
        etag = policy.get("etag")
        if etag and base64.b64decode(etag) != secret.policy_etag:
            raise ApiError(409, "There were concurrent policy changes.", "ABORTED")
        bindings = []
        for binding in policy.get("bindings") or []:
            role, members = binding.get("role", ""), list(binding.get("members") or [])
            if not role.startswith("roles/"):
                raise ApiError(400, f"Role {role} is not supported for this resource.")
            for member in members:
                if not re.fullmatch(r"(serviceAccount|user|group|domain):\S+@?\S*", member):
                    raise ApiError(400, f"Invalid member {member!r}.")
            bindings.append({"role": role, "members": members})
        secret.bindings = bindings
        secret.policy_version = 1
        secret.policy_etag = b"\x00" + secrets.token_bytes(7)
        return secret.policy()
