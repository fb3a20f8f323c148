"""Where gRPC meets the agent: a client's malformed call is its mistake, answered as such.

Against a real agent, on the Workload API, Envoy SDS and admin sockets: a call without its
request message, or with bytes that are not one, answers INVALID_ARGUMENT and leaves no
traceback in the log (it used to surface as INTERNAL: the handler read a missing message as an
empty one, or protobuf's DecodeError escaped it). The agent serves the next call as before.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.raw_grpc import RawGrpcConnection

WORKLOAD = (("workload.spiffe.io", "true"),)

WORKLOAD_METHODS = [
    "/SpiffeWorkloadAPI/FetchX509SVID",
    "/SpiffeWorkloadAPI/FetchX509Bundles",
    "/SpiffeWorkloadAPI/FetchJWTSVID",
    "/SpiffeWorkloadAPI/FetchJWTBundles",
    "/SpiffeWorkloadAPI/ValidateJWTSVID",
    "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
    "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
]
ADMIN_METHODS = [
    "/spire.agent.debug.v1.Debug/GetInfo",
    "/spire.api.agent.logger.v1.Logger/GetLogger",
    "/spire.api.agent.logger.v1.Logger/SetLogLevel",
    "/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/SubscribeToX509SVIDs",
    "/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/FetchJWTSVIDs",
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    server: ServerDaemon = start_server(tmp_path_factory.mktemp("server"))
    directory = tmp_path_factory.mktemp("agent")
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    daemon = start_agent(directory, server, server.join_token(alias), extra=f'admin_socket_path = "{admin(directory)}"')
    yield daemon
    daemon.stop()
    server.stop()


def admin(directory: Path) -> Path:
    return directory / "admin" / "admin.sock"


@contextlib.contextmanager
def _connected(path: Path) -> Iterator[RawGrpcConnection]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    try:
        yield RawGrpcConnection(sock)
    finally:
        sock.close()


def _socket_and_metadata(agent: AgentDaemon, method: str) -> tuple[Path, tuple[tuple[str, str], ...]]:
    if method in WORKLOAD_METHODS:
        return agent.socket_path, WORKLOAD
    return admin(agent.directory), ()


def _assert_no_traceback(agent: AgentDaemon) -> None:
    log = agent.log()
    assert "Traceback" not in log
    assert "Unexpected error" not in log


# StreamSecrets is left out: an Envoy that closes its side before asking anything ends the call.
@pytest.mark.parametrize("method", [m for m in WORKLOAD_METHODS + ADMIN_METHODS if not m.endswith("/StreamSecrets")])
def test_call_without_its_request_message_is_invalid_argument(agent: AgentDaemon, method: str) -> None:
    path, metadata = _socket_and_metadata(agent, method)
    with _connected(path) as connection:
        reply = connection.call_without_message(method, metadata)
    assert reply.status == Status.INVALID_ARGUMENT.value, reply
    assert reply.message == "the request message is missing"
    _assert_no_traceback(agent)


@pytest.mark.parametrize("method", WORKLOAD_METHODS + ADMIN_METHODS)
def test_undecodable_request_is_invalid_argument(agent: AgentDaemon, method: str) -> None:
    path, metadata = _socket_and_metadata(agent, method)
    with _connected(path) as connection:
        # Field 1 as a length-delimited value promising 100 bytes that never come.
        reply = connection.call(method, b"\x0a\x64\x00", metadata)
    assert reply.status == Status.INVALID_ARGUMENT.value, reply
    assert reply.message.startswith("malformed request message"), reply.message
    _assert_no_traceback(agent)


def test_the_agent_serves_well_formed_calls_after_malformed_ones(agent: AgentDaemon) -> None:
    for method in ADMIN_METHODS[:2]:
        with _connected(admin(agent.directory)) as connection:
            connection.call(method, b"\x0a\x64\x00")
            reply = connection.call(method, b"", first_message_only=False)
        assert reply.status == Status.OK.value, reply
        assert reply.messages, reply
