"""A Docker Engine API on a Unix socket, for the parts the ``docker`` attestor reads.

Built from Docker's Engine API reference (v1.47): ``GET /_ping``, ``GET /version`` (what the
SDK negotiates the API version with), ``GET /containers/{id}/json`` (``ContainerInspectResponse``:
``Id``, ``Name``, ``Image`` — the ID of the image the container runs — and ``Config`` with
``Image``, ``Env`` and ``Labels``). Paths may carry a
``/v<major>.<minor>`` prefix; a version newer than the engine's is refused with 400 as the
engine does, and errors are ``{"message": ...}`` bodies. The ``docker`` SDK talks to it over
a real socket, exactly as it talks to ``dockerd``.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

API_VERSION = "1.47"
_PATH = re.compile(r"^(?:/v(?P<version>\d+\.\d+))?(?P<rest>/[^?]*)")


def container_id() -> str:
    """A fresh 64-hex-digit container ID."""
    return secrets.token_hex(32)


@dataclass
class Container:
    """A container as ``docker inspect`` shows it (the fields the attestor reads)."""

    id: str = field(default_factory=container_id)
    name: str = "web"
    image: str = "envoyproxy/envoy:contrib-v1.29.1"
    image_id: str = field(default_factory=lambda: f"sha256:{secrets.token_hex(32)}")
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin", "ENVIRONMENT=prod"])
    labels: dict[str, str] = field(default_factory=lambda: {"com.example.name": "foo", "com.example.tier": "front"})

    def inspect(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Created": "2025-01-06T10:00:00.000000000Z",
            "Path": "/docker-entrypoint.sh",
            "Args": [],
            "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 4242, "ExitCode": 0},
            "Image": self.image_id,
            "Name": f"/{self.name}",
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "Config": {
                "Hostname": self.id[:12],
                "User": "",
                "Env": self.env,
                "Cmd": ["/docker-entrypoint.sh"],
                "Image": self.image,
                "Labels": self.labels,
            },
        }


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Engine:
    """The fake engine: ``containers`` by ID, ``requests`` as (method, path) in arrival order."""

    def __init__(self, socket_path: Path, api_version: str = API_VERSION) -> None:
        self.socket_path = socket_path
        self.api_version = api_version
        self.containers: dict[str, Container] = {}
        self.requests: list[tuple[str, str]] = []
        self.failure: tuple[int, str] | None = None
        """When set, every container request is answered with this (status, message)."""
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def add(self, container: Container) -> Container:
        self.containers[container.id] = container
        return container

    def start(self) -> Engine:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:
                return "unix"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                engine.requests.append(("GET", self.path))
                match = _PATH.match(self.path)
                assert match is not None
                version, rest = match.group("version"), match.group("rest")
                if version is not None and _newer(version, engine.api_version):
                    return self._send(
                        400,
                        {
                            "message": f"client version {version} is too new. "
                            f"Maximum supported API version is {engine.api_version}"
                        },
                    )
                if rest == "/_ping":
                    return self._send(200, None, text="OK")
                if rest == "/version":
                    return self._send(200, engine.version())
                if (inspect := re.fullmatch(r"/containers/([^/]+)/json", rest)) is not None:
                    if engine.failure is not None:
                        return self._send(engine.failure[0], {"message": engine.failure[1]})
                    container = engine.containers.get(inspect.group(1))
                    if container is None:
                        return self._send(404, {"message": f"No such container: {inspect.group(1)}"})
                    return self._send(200, container.inspect())
                return self._send(404, {"message": "page not found"})

            def _send(self, status: int, body: Any, text: str | None = None) -> None:
                data = (text if text is not None else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Api-Version", engine.api_version)
                self.send_header("Content-Type", "text/plain" if text is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                # One request per connection: no idle connection outlives the engine's stop().
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._server = _Server(str(self.socket_path), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def version(self) -> dict[str, Any]:
        return {
            "Platform": {"Name": "Docker Engine - Community"},
            "Version": "27.5.1",
            "ApiVersion": self.api_version,
            "MinAPIVersion": "1.24",
            "GitCommit": "4c9b3b0",
            "GoVersion": "go1.22.11",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "6.1.0",
        }

    def container_requests(self) -> list[str]:
        return [path for _, path in self.requests if "/containers/" in path]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def _newer(version: str, than: str) -> bool:
    return tuple(map(int, version.split("."))) > tuple(map(int, than.split(".")))
