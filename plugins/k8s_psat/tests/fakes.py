"""A small HTTPS Kubernetes API server for the k8s_psat tests, built from the API reference.

It serves what the plugin uses — ``POST /apis/authentication.k8s.io/v1/tokenreviews``,
``GET /api/v1/namespaces/{ns}/pods/{name}`` and ``GET /api/v1/nodes/{name}`` — over TLS with
its own CA, to callers presenting the bearer token of the kubeconfig it writes. Service
account tokens are opaque strings it knows (as the real server knows what it signed), each
bound to a pod and valid for its audiences.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from tests.support import http_fakes
from tests.support.pki import make_ca, make_tls_certificate, write_pem


@dataclass
class FakePod:
    namespace: str = "spire"
    name: str = "spire-agent-v5wgr"
    uid: str = "79261129-6b60-11e9-9054-0800277ac80f"
    node_name: str = "node-1"
    host_ip: str = "10.0.0.5"
    labels: dict[str, str] = field(default_factory=lambda: {"app": "spire-agent", "tier": "infra"})


@dataclass
class FakeNode:
    name: str = "node-1"
    uid: str = "8d4b1c2e-0000-4000-8000-000000000001"
    labels: dict[str, str] = field(default_factory=lambda: {"topology.kubernetes.io/zone": "z1", "pool": "a"})


@dataclass(frozen=True)
class ServiceAccountToken:
    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    audiences: tuple[str, ...] = ("spire-server",)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class KubeApiServer:
    pods: dict[tuple[str, str], FakePod] = field(default_factory=dict)
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    tokens: dict[str, ServiceAccountToken] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    unavailable: bool = False
    """While set, every request is answered 503, as an API server that is down behind its load balancer."""
    _bearer: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _ca_pem: bytes = b""
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def add_pod(self, pod: FakePod, node: FakeNode) -> None:
        self.pods[(pod.namespace, pod.name)] = pod
        self.nodes[node.name] = node

    def issue_token(self, pod: FakePod, service_account: str = "spire-agent", **kwargs: Any) -> str:
        token = "eyJ" + secrets.token_urlsafe(48)
        self.tokens[token] = ServiceAccountToken(pod.namespace, service_account, pod.name, pod.uid, **kwargs)
        return token

    def kubeconfig(self, directory: Path, bearer: str | None = None) -> Path:
        path = directory / "kubeconfig.yaml"
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

            def _send(self, code: int, body: Any) -> None:
                http_fakes.send_json(self, code, body)

            def _authorized(self) -> bool:
                if api.unavailable:
                    self._send(
                        503, _status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
                    )
                    return False
                if self.headers.get("Authorization") != f"Bearer {api._bearer}":
                    self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                    return False
                return True

            def do_POST(self) -> None:
                api.requests.append(f"POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self._authorized():
                    return
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
                spec = body.get("spec", {})
                wanted = spec.get("audiences") or ["https://kubernetes.default.svc"]
                token = api.tokens.get(spec.get("token", ""))
                status: dict[str, Any]
                if token is None:
                    status = {"authenticated": False, "error": "invalid bearer token"}
                elif not set(wanted) & set(token.audiences):
                    status = {
                        "authenticated": False,
                        "error": f"token audiences {list(token.audiences)} is invalid for the target audiences {wanted}",
                    }
                else:
                    status = {
                        "authenticated": True,
                        "audiences": [a for a in wanted if a in token.audiences],
                        "user": {
                            "username": f"system:serviceaccount:{token.namespace}:{token.service_account}",
                            "uid": "sa-uid",
                            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{token.namespace}"],
                            "extra": {
                                "authentication.kubernetes.io/pod-name": [token.pod_name],
                                "authentication.kubernetes.io/pod-uid": [token.pod_uid],
                            },
                        },
                    }
                self._send(
                    201,
                    {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": spec, "status": status},
                )

            def do_GET(self) -> None:
                api.requests.append(f"GET {self.path}")
                if not self._authorized():
                    return
                pod_match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/?]+)", self.path)
                node_match = re.fullmatch(r"/api/v1/nodes/([^/?]+)", self.path)
                if pod_match and (pod := api.pods.get((pod_match.group(1), pod_match.group(2)))):
                    return self._send(
                        200,
                        {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "metadata": {
                                "name": pod.name,
                                "namespace": pod.namespace,
                                "uid": pod.uid,
                                "labels": pod.labels,
                            },
                            "spec": {"nodeName": pod.node_name, "containers": [{"name": "agent"}]},
                            "status": {"hostIP": pod.host_ip, "phase": "Running"},
                        },
                    )
                if node_match and (node := api.nodes.get(node_match.group(1))):
                    return self._send(
                        200,
                        {
                            "kind": "Node",
                            "apiVersion": "v1",
                            "metadata": {"name": node.name, "uid": node.uid, "labels": node.labels},
                        },
                    )
                self._send(404, _status(404, "NotFound", f"{self.path} not found"))

        self._server = http_fakes.serve(Handler, tls=context)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)
