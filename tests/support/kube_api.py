"""A small HTTPS Kubernetes API server for the Kubernetes plugins' tests, built from the API reference.

It serves the resources the plugins use, each at its REST path, as the real API server does:
``configmaps`` (namespaced; get, create, update, strategic-merge and server-side-apply patch),
``validatingwebhookconfigurations``, ``mutatingwebhookconfigurations`` and ``apiservices``
(cluster-wide; get, list by label, patch) and cert-manager's ``certificaterequests``
(namespaced; create with ``generateName``, get, list by label, delete). Every write bumps the
object's ``resourceVersion``; a write carrying an older one is answered ``409 Conflict``, and
server-side apply refuses to take a field another field manager owns unless forced, so a
client's concurrency handling is exercised for real. Callers must present the bearer token
of the kubeconfig it writes.

``on_create`` callbacks see each created object (the cert-manager tests' issuer is one:
``plugins/cert_manager/tests/issuer.py``); ``before_write`` callbacks run before each write,
so a test can play another writer changing the object in between.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography.hazmat.primitives import serialization

from tests.support import http_fakes
from tests.support.pki import make_ca, make_tls_certificate, write_pem

__all__ = ["RESOURCES", "KubeApiServer", "Resource"]


@dataclass(frozen=True)
class Resource:
    """A kind of object and where the API serves it."""

    api_prefix: str
    plural: str
    kind: str
    api_version: str
    namespaced: bool


RESOURCES = {
    resource.plural: resource
    for resource in (
        Resource("/api/v1", "configmaps", "ConfigMap", "v1", namespaced=True),
        Resource(
            "/apis/admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
            namespaced=False,
        ),
        Resource(
            "/apis/admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
            namespaced=False,
        ),
        Resource(
            "/apis/apiregistration.k8s.io/v1",
            "apiservices",
            "APIService",
            "apiregistration.k8s.io/v1",
            namespaced=False,
        ),
        Resource(
            "/apis/cert-manager.io/v1",
            "certificaterequests",
            "CertificateRequest",
            "cert-manager.io/v1",
            namespaced=True,
        ),
    )
}

_STRATEGIC_MERGE_KEYS = {"webhooks": "name"}
"""Lists a strategic merge patch merges item by item, by this key (as the webhook types declare)."""

_ObjectKey = tuple[str, str, str]  # (plural, namespace, name)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Refused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message)


def _strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_merge(target[key], value)
        elif key in _STRATEGIC_MERGE_KEYS and isinstance(value, list) and isinstance(target.get(key), list):
            merge_key = _STRATEGIC_MERGE_KEYS[key]
            items = {item.get(merge_key): item for item in target[key]}
            for item in value:
                if item.get(merge_key) in items:
                    _strategic_merge(items[item.get(merge_key)], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors (``a=b,c==d,e!=f``) and bare existence (``a``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class KubeApiServer:
    """The API server; ``objects`` holds what it serves, by (plural, namespace, name)."""

    objects: dict[_ObjectKey, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    unavailable: bool = False
    """While set, every request is answered 503, as an API server that is down behind its load balancer."""
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    """(method, plural) pairs answered 403, as RBAC refusing the caller."""
    on_create: list[Callable[[KubeApiServer, dict[str, Any]], None]] = field(default_factory=list)
    before_write: list[Callable[[KubeApiServer, str, _ObjectKey], None]] = field(default_factory=list)
    _owners: dict[tuple[_ObjectKey, str], str] = field(default_factory=dict)
    _versions: Any = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _bearer: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _ca_pem: bytes = b""
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # --- what tests arrange and read back -------------------------------------------------

    def put(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store ``body`` (a new object, or a new version of one) as a client's update would."""
        with self._lock:
            metadata = body.setdefault("metadata", {})
            resource = RESOURCES[plural]
            key = (plural, metadata.get("namespace", "") if resource.namespaced else "", metadata["name"])
            existing = self.objects.get(key)
            body.setdefault("kind", resource.kind)
            body.setdefault("apiVersion", resource.api_version)
            metadata["uid"] = existing["metadata"]["uid"] if existing else str(uuid.uuid4())
            metadata["creationTimestamp"] = (
                existing["metadata"]["creationTimestamp"]
                if existing
                else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            metadata["resourceVersion"] = str(next(self._versions))
            self.objects[key] = copy.deepcopy(body)
            return copy.deepcopy(body)

    def get(self, plural: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self._lock:
            found = self.objects.get((plural, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def update(self, plural: str, name: str, namespace: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change a stored object in place (a new resourceVersion), as another client would."""
        with self._lock:
            found = self.get(plural, name, namespace)
            assert found is not None, f"no {plural} {namespace}/{name}"
            change(found)
            self.put(plural, found)

    def kubeconfig(self, directory: Path, bearer: str | None = None, name: str = "kubeconfig.yaml") -> Path:
        path = directory / name
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": self.url,
                                "certificate-authority-data": base64.b64encode(self._ca_pem).decode(),
                            },
                        }
                    ],
                    "users": [{"name": "spire-server", "user": {"token": bearer or self._bearer}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "spire-server"}}],
                    "current-context": "test",
                }
            )
        )
        return path

    # --- the API --------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[Resource, str, str]:
        """(resource, namespace, name) of a request path; name "" for the collection."""
        for resource in RESOURCES.values():
            prefix = re.escape(resource.api_prefix)
            scope = r"/namespaces/(?P<ns>[^/]+)" if resource.namespaced else r"(?P<ns>)"
            match = re.fullmatch(rf"{prefix}{scope}/{resource.plural}(?:/(?P<name>[^/]+))?", path)
            if match:
                return resource, match.group("ns"), match.group("name") or ""
        raise _Refused(404, "NotFound", "the server could not find the requested resource")

    def _stored(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        found = self.objects.get((resource.plural, namespace, name))
        if found is None:
            raise _Refused(404, "NotFound", f'{resource.plural} "{name}" not found')
        return found

    def _check_version(self, resource: Resource, current: dict[str, Any], sent: dict[str, Any]) -> None:
        version = (sent.get("metadata") or {}).get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            name = current["metadata"]["name"]
            raise _Refused(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )

    def _before_write(self, method: str, key: _ObjectKey) -> None:
        for callback in list(self.before_write):
            callback(self, method, key)

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON body)."""
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            resource, namespace, name = self._route(parts.path)
            if (method, resource.plural) in self.forbidden:
                raise _Refused(
                    403,
                    "Forbidden",
                    f'{resource.plural} is forbidden: User "spire-server" cannot {method.lower()} resource '
                    f'"{resource.plural}"',
                )
            sent = yaml.safe_load(body) if body else {}
            if name and method != "GET":
                self._before_write(method, (resource.plural, namespace, name))
            with self._lock:
                return self._handle(method, resource, namespace, name, query, content_type, sent)
        except _Refused as refused:
            return refused.body["code"], refused.body
        except yaml.YAMLError as err:
            return 400, _status(400, "BadRequest", f"the body of the request was in an unknown format: {err}")

    def _handle(
        self,
        method: str,
        resource: Resource,
        namespace: str,
        name: str,
        query: dict[str, str],
        content_type: str,
        sent: Any,
    ) -> tuple[int, Any]:
        if method == "GET" and not name:
            selector = query.get("labelSelector", "")
            items = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self.objects.items())
                if plural == resource.plural
                and (not resource.namespaced or ns == namespace)
                and _matches(obj["metadata"].get("labels") or {}, selector)
            ]
            return 200, {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(next(self._versions))},
                "items": items,
            }
        if method == "GET":
            return 200, copy.deepcopy(self._stored(resource, namespace, name))
        if method == "POST" and not name:
            return self._create(resource, namespace, sent)
        if method == "PUT" and name:
            current = self._stored(resource, namespace, name)
            self._check_version(resource, current, sent)
            sent.setdefault("metadata", {}).update(name=name, namespace=namespace or None)
            return 200, self.put(resource.plural, sent)
        if method == "PATCH" and name:
            return self._patch(resource, namespace, name, query, content_type, sent)
        if method == "DELETE" and name:
            self._stored(resource, namespace, name)
            del self.objects[(resource.plural, namespace, name)]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported on {resource.plural}")

    def _create(self, resource: Resource, namespace: str, sent: dict[str, Any]) -> tuple[int, Any]:
        metadata = sent.setdefault("metadata", {})
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise _Refused(422, "Invalid", f"{resource.kind}.metadata.name: Required value: name or generateName")
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        if resource.namespaced:
            metadata["namespace"] = namespace
        if (resource.plural, namespace, metadata["name"]) in self.objects:
            raise _Refused(409, "AlreadyExists", f'{resource.plural} "{metadata["name"]}" already exists')
        created = self.put(resource.plural, sent)
        for callback in list(self.on_create):
            callback(self, copy.deepcopy(created))
        return 201, self.get(resource.plural, metadata["name"], namespace) or created

    def _patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        query: dict[str, str],
        content_type: str,
        sent: dict[str, Any],
    ) -> tuple[int, Any]:
        key = (resource.plural, namespace, name)
        if content_type.startswith("application/apply-patch"):
            return self._apply(resource, key, query, sent)
        if content_type not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            raise _Refused(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        current = copy.deepcopy(self._stored(resource, namespace, name))
        self._check_version(resource, current, sent)
        patch = copy.deepcopy(sent)
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        _strategic_merge(current, patch)
        return 200, self.put(resource.plural, current)

    def _apply(
        self, resource: Resource, key: _ObjectKey, query: dict[str, str], sent: dict[str, Any]
    ) -> tuple[int, Any]:
        """Server-side apply of ``data`` keys: each owned by the field manager that last set it."""
        manager = query.get("fieldManager", "")
        if not manager:
            raise _Refused(422, "Invalid", "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value")
        if sent.get("kind") != resource.kind or sent.get("apiVersion") != resource.api_version:
            raise _Refused(400, "BadRequest", "apply patches must set kind and apiVersion")
        force = query.get("force") == "true"
        current = copy.deepcopy(self.objects.get(key)) or {"metadata": {"name": key[2], "namespace": key[1]}}
        data = current.setdefault("data", {})
        for data_key, value in (sent.get("data") or {}).items():
            owner = self._owners.get((key, data_key))
            if owner not in (None, manager) and data.get(data_key) != value and not force:
                raise _Refused(
                    409, "Conflict", f'Apply failed with 1 conflict: conflict with "{owner}": .data.{data_key}'
                )
            data[data_key] = value
            self._owners[(key, data_key)] = manager
        created = key not in self.objects
        return (201 if created else 200), self.put(resource.plural, current)

    def set_owner(self, key: _ObjectKey, data_key: str, manager: str) -> None:
        """Record ``manager`` as the owner of ``.data.<data_key>`` (as its own apply would)."""
        self._owners[(key, data_key)] = manager

    # --- serving --------------------------------------------------------------------------

    def start(self, directory: Path) -> KubeApiServer:
        ca = make_ca(name="kubernetes")
        self._ca_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
        write_pem(make_tls_certificate(ca), directory / "apiserver.pem", directory / "apiserver.key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "apiserver.pem", directory / "apiserver.key")
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                api.requests.append(f"{self.command} {self.path}")
                if api.unavailable:
                    message = "the server is currently unable to handle the request"
                    return http_fakes.send_json(self, 503, _status(503, "ServiceUnavailable", message))
                if self.headers.get("Authorization") != f"Bearer {api._bearer}":
                    return http_fakes.send_json(self, 401, _status(401, "Unauthorized", "Unauthorized"))
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                code, answer = api.handle(self.command, self.path, content_type, body)
                http_fakes.send_json(self, code, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = http_fakes.serve(Handler, tls=context)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
