"""fake-gcs-server (github.com/fsouza/fake-gcs-server) as a child process: a real Cloud Storage JSON API.

It is built once per machine from the Go module proxy with ``go install`` into the peers cache
(tests/support/peers.py), and run on loopback over plain HTTP with the in-memory backend. Tests
reach it through google-cloud-storage, pointed at it with ``STORAGE_EMULATOR_HOST`` as
Google's client libraries (SPIRE's Go one too) are; it takes any credentials, or none.

fake-gcs-server checks no credentials, so :class:`TokenEndpoint` stands in for Google's OAuth
token endpoint: a service account file whose ``token_uri`` points there gets a token only for
an assertion signed with the file's key, and the endpoint records whom it granted, which is
how a test sees that a configured ``service_account_file`` was the one used.

A build that fails (no Go toolchain, no module proxy) skips the tests that need the server,
naming the build log, and fails them under CI=true.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage

from tests.support import http_fakes, peer_builds
from tests.support.free_port import free_port

__all__ = [
    "FakeGcsServer",
    "Gcs",
    "TokenEndpoint",
    "client",
    "fake_gcs_server",
    "gcs",
    "gcs_unreachable",
    "mark_users",
    "token_endpoint",
]


class FakeGcsServer:
    """fake-gcs-server on ``127.0.0.1:<port>``; ``emulator_host`` is the STORAGE_EMULATOR_HOST value."""

    def __init__(self, binary: Path) -> None:
        self.port = free_port()
        self.emulator_host = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend", "memory",
             "-external-url", self.emulator_host, "-public-host", f"127.0.0.1:{self.port}", "-log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.emulator_host}/storage/v1/b", timeout=2):
                    return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not start on port {self.port}") from None
                time.sleep(0.1)

    def environment(self) -> dict[str, str]:
        """What a process needs for google-cloud-storage to use this server, never Google's."""
        return {"STORAGE_EMULATOR_HOST": self.emulator_host, "GOOGLE_CLOUD_PROJECT": "test-project"}

    def use_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point google-cloud-storage in this process at the server for one test."""
        for name, value in self.environment().items():
            monkeypatch.setenv(name, value)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def mark_users(items: list[pytest.Item]) -> None:
    """``pytest_collection_modifyitems`` for the conftests whose tests use the server: they need its build."""
    for item in items:
        if "fake_gcs_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.needs_build("fake-gcs-server"))


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[FakeGcsServer]:
    """One fake-gcs-server for the session; tests use buckets of their own."""
    server = FakeGcsServer(peer_builds.require("fake-gcs-server").path("fake-gcs-server"))
    yield server
    server.stop()


_GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
"""google-auth addresses its assertions to Google's token endpoint wherever ``token_uri`` sends them."""


class TokenEndpoint:
    """Google's OAuth 2.0 token endpoint for service account JWT assertions (RFC 7523), on loopback."""

    def __init__(self) -> None:
        self.granted: list[str] = []
        """The ``client_email`` of every assertion that verified, in order."""
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._server = http_fakes.serve(self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def service_account_file(self, directory: Path, email: str = "spire@test-project.iam.gserviceaccount.com") -> Path:
        """A service account key file whose ``token_uri`` is this endpoint."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._keys[email] = private.public_key()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "test-project", "private_key_id": "1", "private_key": pem,
            "client_email": email, "client_id": "1", "token_uri": self.url,
        }))  # fmt: skip
        return path

    def _grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assertion = form.get("assertion", "")
        try:
            email = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            jwt.decode(assertion, self._keys[email], algorithms=["RS256"], audience=_GOOGLE_TOKEN_AUDIENCE)
        except (jwt.PyJWTError, KeyError):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        self.granted.append(email)
        return 200, {"access_token": secrets.token_urlsafe(16), "expires_in": 3600, "token_type": "Bearer"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {key: values[-1] for key, values in parse_qs(body).items()}
                http_fakes.send_json(self, *endpoint._grant(form))

        return Handler

    def stop(self) -> None:
        http_fakes.stop(self._server)


_serial = itertools.count()


@dataclass(frozen=True)
class Gcs:
    """A bucket of its own on the fake, for one test (the fake keeps buckets for the session)."""

    server: FakeGcsServer
    bucket: str

    @classmethod
    def with_new_bucket(cls, server: FakeGcsServer) -> Gcs:
        name = f"bundles-{os.getpid()}-{next(_serial)}"
        client().create_bucket(name)
        return cls(server, name)

    def blob(self, name: str) -> storage.Blob | None:
        """The object, or None when there is none."""
        return client().bucket(self.bucket).get_blob(name)

    def read(self, name: str) -> bytes | None:
        """The object's content, or None when there is none."""
        blob = self.blob(name)
        return None if blob is None else blob.download_as_bytes()


def client() -> storage.Client:
    """A client of the fake, in a process whose STORAGE_EMULATOR_HOST points at it."""
    return storage.Client(project="test-project")


@pytest.fixture
def gcs(fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Gcs:
    """google-cloud-storage in this process pointed at the fake (never at Google), with a new bucket."""
    fake_gcs_server.use_here(monkeypatch)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return Gcs.with_new_bucket(fake_gcs_server)


@pytest.fixture
def gcs_unreachable(gcs: Gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    """STORAGE_EMULATOR_HOST moved to a closed port: every request fails to connect."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.stop()
