"""gRPC's 4 MiB receive limit, enforced before a request is buffered, on every listener.

An unauthenticated client declares a 256 MiB request and keeps sending: the server's TCP port,
its admin socket and the agent's Workload API socket each answer RESOURCE_EXHAUSTED from the
length prefix, after at most one flow-control window of it, and the daemon's peak resident
memory (``VmHWM``) does not grow by anything near the request's size.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status

from tests.support.daemons import AgentDaemon, Daemon, ServerDaemon, start_agent, start_server
from tests.support.raw_grpc import RawGrpcConnection

DECLARED = 256 * 1024 * 1024
LIMIT = 4 * 1024 * 1024
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    server = start_server(tmp_path_factory.mktemp("server"))
    agent = start_agent(
        tmp_path_factory.mktemp("agent"), server, server.join_token(f"spiffe://example.org/{uuid.uuid4()}")
    )
    yield server, agent
    agent.stop()
    server.stop()


def _peak_rss(daemon: Daemon) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _tls_to(port: int) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # an anonymous client that trusts anything
    context.set_alpn_protocols(["h2"])
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port)))


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


@pytest.mark.parametrize(
    ("listener", "method"),
    [
        ("server TCP", "/spire.api.server.bundle.v1.Bundle/GetBundle"),
        ("server admin socket", "/spire.api.server.entry.v1.Entry/BatchCreateEntry"),
        ("agent Workload API", "/SpiffeWorkloadAPI/FetchJWTSVID"),
    ],
)
def test_a_256_mib_request_is_refused_from_its_length_prefix(
    daemons: tuple[ServerDaemon, AgentDaemon], listener: str, method: str
) -> None:
    server, agent = daemons
    daemon: Daemon = agent if listener.startswith("agent") else server
    if listener == "server TCP":
        sock: socket.socket = _tls_to(server.port)
    else:
        sock = _unix(daemon.socket_path)
    before = _peak_rss(daemon)
    with sock:
        reply, sent = RawGrpcConnection(sock, timeout=30).send_oversized(method, DECLARED)
    grown = _peak_rss(daemon) - before
    assert grown < 32 * MiB, f"{listener}: peak RSS grew by {grown // MiB} MiB"
    assert sent <= 2 * LIMIT, f"{sent // MiB} MiB were taken in before the refusal"
    assert reply.status == Status.RESOURCE_EXHAUSTED.value, reply
    assert reply.message == f"grpc: received message larger than max ({DECLARED} vs. {LIMIT})"
