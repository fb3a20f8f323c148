"""A caller whose PID is reused by another binary gets nothing of that binary's identity.

The attack: a process connects to the Workload API, hands the connection to an accomplice
and exits; another program is started under its PID; the accomplice then calls. An agent that
looked the caller up by PID at the first call would attest the new program and hand out its
SVID. The agent pins the caller when it accepts the connection, so the call is refused, on
the Workload API and on Envoy SDS alike. The PID is reused exactly (``clone3`` with
``set_tid``), not by chance.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from grpclib.const import Status
from pyspire.proto.spiffe.workload import workload_pb2 as pb

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.pid_reuse import PidTaken, can_reuse_pids, start_with_pid
from tests.support.raw_grpc import RawGrpcConnection, Reply
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

pytestmark = pytest.mark.skipif(not can_reuse_pids(), reason="choosing a child's PID (clone3 set_tid) needs root")

VICTIM = "spiffe://example.org/victim"
VICTIM_BINARY = os.path.realpath("/bin/sleep")

# Connects, waits for the agent's first HTTP/2 frame (the connection is accepted), passes the
# connected socket to the test through the inherited socket pair, and exits.
_CONNECT_AND_LEAVE = """
import socket, sys
handover = socket.socket(fileno=int(sys.argv[2]))
workload_api = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
workload_api.connect(sys.argv[1])
workload_api.recv(1, socket.MSG_PEEK)
socket.send_fds(handover, [b"x"], [workload_api.fileno()])
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    server: ServerDaemon = start_server(tmp_path_factory.mktemp("server"))
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    daemon = start_agent(
        tmp_path_factory.mktemp("agent"), server, server.join_token(alias), unix_data="discover_workload_path = true"
    )
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", VICTIM, "-selector", f"unix:path:{VICTIM_BINARY}")
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/tester",
               "-selector", f"unix:path:{os.path.realpath(sys.executable)}")  # fmt: skip
    eventually(lambda: x509_context(daemon), timeout=30)  # entries synced and SVIDs minted
    yield daemon
    daemon.stop()
    server.stop()


def _connection_left_behind(agent: AgentDaemon) -> tuple[socket.socket, int]:
    """A Workload API connection whose opener has exited (and been reaped): (socket, its PID)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        opener = subprocess.Popen(
            [sys.executable, "-c", _CONNECT_AND_LEAVE, str(agent.socket_path), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        assert opener.wait(10) == 0
    return socket.socket(fileno=fds[0]), opener.pid


def _calls_after_pid_reuse(agent: AgentDaemon) -> tuple[Reply, Reply]:
    """FetchX509SVID and SDS FetchSecrets on a connection whose opener's PID now runs VICTIM_BINARY."""
    for _ in range(3):
        connection, pid = _connection_left_behind(agent)
        try:
            victim = start_with_pid(pid, [VICTIM_BINARY, "60"])
        except PidTaken:
            connection.close()
            continue
        try:
            raw = RawGrpcConnection(connection)
            workload = raw.call(
                "/SpiffeWorkloadAPI/FetchX509SVID",
                pb.X509SVIDRequest().SerializeToString(),
                (("workload.spiffe.io", "true"),),
            )
            sds = raw.call(
                "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
                discovery_pb2.DiscoveryRequest(resource_names=[VICTIM]).SerializeToString(),
                (("workload.spiffe.io", "true"),),
            )
            return workload, sds
        finally:
            connection.close()
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
    raise AssertionError("could not reuse a PID three times in a row")


def test_a_reused_pid_gives_no_identity_of_the_binary_now_running_under_it(agent: AgentDaemon) -> None:
    workload, sds = _calls_after_pid_reuse(agent)
    for reply in (workload, sds):
        assert not any(VICTIM.encode() in message for message in reply.messages)
        assert reply.status == Status.PERMISSION_DENIED.value, reply
        assert "exited or was replaced" in reply.message
