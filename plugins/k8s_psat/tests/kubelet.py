"""A node for the k8s workload attestor's tests: a kubelet's ``/pods`` and real pod cgroups.

The kubelet fake serves ``GET /pods`` as the kubelet API does (a ``PodList`` of ``v1.Pod``),
on its secure port (TLS with its own CA; a bearer token, a client certificate signed by its
client CA, or anonymous when allowed) or on a plain-HTTP read-only port.

``PodCgroup`` puts real processes where the kubelet's cgroupfs driver puts a container's:
``/sys/fs/cgroup/pids/kubepods/besteffort/pod<uid>/<container id>``. It needs root and a
writable cgroup hierarchy; without them the tests that use it skip and say so.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support import http_fakes
from tests.support.pki import make_ca, make_tls_certificate, write_pem

CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


def container_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Container:
    name: str
    container_id: str
    image: str = "docker.io/library/web:1.4"
    image_id: str = "docker.io/library/web@sha256:" + "ab" * 32

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "containerID": f"containerd://{self.container_id}",
            "ready": True,
        }


@dataclass
class Pod:
    uid: str
    name: str = "web-7d4b9c-x2x9q"
    namespace: str = "prod"
    service_account: str = "web"
    node_name: str = "node-1"
    labels: dict[str, str] = field(default_factory=lambda: {"app": "web", "tier": "front"})
    containers: list[Container] = field(default_factory=list)
    init_containers: list[Container] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "labels": self.labels,
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "rs-1"}
                ],
            },
            "spec": {
                "serviceAccountName": self.service_account,
                "nodeName": self.node_name,
                "containers": [{"name": c.name, "image": c.image} for c in self.containers],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [c.status() for c in self.containers],
                "initContainerStatuses": [c.status() for c in self.init_containers],
            },
        }


@dataclass
class Kubelet:
    """``GET /pods``; ``read_only`` serves plain HTTP without authentication."""

    read_only: bool = False
    host: str = "127.0.0.1"
    allow_anonymous: bool = False
    pods: list[Pod] = field(default_factory=list)
    requests: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    ca_path: Path | None = None
    client_cert: tuple[Path, Path] | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self, directory: Path) -> Kubelet:
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                kubelet.requests += 1
                authenticated = (
                    kubelet.read_only
                    or kubelet.allow_anonymous
                    or self.headers.get("Authorization") == f"Bearer {kubelet.token}"
                    or (isinstance(self.connection, ssl.SSLSocket) and self.connection.getpeercert() is not None)
                )
                if not authenticated:
                    self._send(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
                elif self.path != "/pods":
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                else:
                    self._send(
                        200, {"kind": "PodList", "apiVersion": "v1", "items": [p.manifest() for p in kubelet.pods]}
                    )

            def _send(self, code: int, body: Any) -> None:
                http_fakes.send_json(self, code, body)

        context = None
        if not self.read_only:
            ca = make_ca(name="kubelet CA")
            client_ca = make_ca(name="kubelet client CA")
            cert, key = write_pem(
                make_tls_certificate(ca, self.host), directory / "kubelet.pem", directory / "kubelet.key"
            )
            self.ca_path = directory / "kubelet-ca.pem"
            self.ca_path.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
            (directory / "client-ca.pem").write_bytes(client_ca.certificate.public_bytes(serialization.Encoding.PEM))
            self.client_cert = write_pem(
                make_tls_certificate(client_ca, "spire-agent"), directory / "client.pem", directory / "client.key"
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            context.load_verify_locations(cafile=directory / "client-ca.pem")
            context.verify_mode = ssl.CERT_OPTIONAL
        self._server = http_fakes.serve(Handler, tls=context, host=self.host)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)


class PodCgroup:
    """A container's cgroup, as the kubelet's cgroupfs driver lays it out; processes can be put in it."""

    def __init__(self, pod_uid: str, container: str) -> None:
        self.pod_dir = CGROUP_ROOT / "kubepods" / "besteffort" / f"pod{pod_uid}"
        self.path = self.pod_dir / container
        self._pids: list[int] = []

    def __enter__(self) -> PodCgroup:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            pytest.skip(f"cannot make a pod cgroup under {CGROUP_ROOT} (root and cgroupfs needed): {err}")
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        self._pids.append(pid)

    def __exit__(self, *exc: object) -> None:
        for pid in self._pids:
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.procs").write_text(str(pid))
        for directory in (self.path, self.pod_dir):
            with contextlib.suppress(OSError):
                directory.rmdir()
