"""The Workload API's order of checks, watched through the probe WorkloadAttestor.

The probe (tests/support/probe_attestor.py) records every process it is asked about and can
take its time, so a test can see whether a call was attested at all (reliability case 1: not
before the security header is checked) and can let the caller exit while it is being
attested (case 5: a caller that is gone by the time its selectors are known gets nothing,
even if another process holds its connection).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from tests.agent.test_workload_api_input import REQUESTS, call
from tests.support.daemons import AgentDaemon, ServerDaemon, start_server
from tests.support.probe_attestor import ProbedAgent
from tests.support.workloads import x509_context


def _fetch_x509_ids(agent: AgentDaemon) -> list[str]:
    return [str(svid.spiffe_id) for svid in x509_context(agent).svids]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def probed(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbedAgent]:
    agent = ProbedAgent(tmp_path_factory.mktemp("probed"), server, delay=0)
    yield agent
    agent.daemon.stop()


def test_no_call_without_the_security_header_is_attested(probed: ProbedAgent) -> None:
    """Regression guard: attesting before checking the header passed the whole suite."""
    before = len(probed.attested())
    for method, request in sorted(REQUESTS.items()):
        with pytest.raises(GRPCError) as raised:
            call(probed.daemon, method, request, metadata=None)
        assert raised.value.status is Status.INVALID_ARGUMENT, method
    sds_request = discovery_pb2.DiscoveryRequest(
        type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    )
    with (
        grpc.insecure_channel(f"unix:{probed.daemon.socket_path}") as channel,
        pytest.raises(grpc.RpcError) as sds_raised,
    ):
        sds_pb2_grpc.SecretDiscoveryServiceStub(channel).FetchSecrets(sds_request, timeout=10)
    assert sds_raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(probed.attested()) == before
    # The probe does see calls that carry the header.
    assert _fetch_x509_ids(probed.daemon) == ["spiffe://example.org/probed"]
    assert len(probed.attested()) == before + 1


CALLER = '''
import asyncio, json, os, socket, sys, time
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub

socket_path, probe_log = sys.argv[1], sys.argv[2]
if os.fork():
    os.wait()  # the caller is reaped as soon as it exits: no zombie left to look alive
    os._exit(0)
connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
connection.connect(socket_path)  # the agent sees this process (SO_PEERCRED) as the caller
caller = os.getpid()
if os.fork():
    # The caller: alive when the agent accepts and starts attesting it, gone before it is done.
    deadline = time.monotonic() + 20
    while str(caller) not in open(probe_log).read().split() and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)


class InheritedChannel(Channel):
    """A channel over the connection the caller opened and left behind."""

    async def _create_connection(self):
        _, protocol = await asyncio.get_running_loop().create_unix_connection(self._protocol_factory, sock=connection)
        return protocol


async def fetch():
    channel = InheritedChannel(path=socket_path)
    try:
        stream = SpiffeWorkloadAPIStub(channel).FetchX509SVID.open(metadata={"workload.spiffe.io": "true"}, timeout=20)
        async with stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            reply = await stream.recv_message()
            await stream.cancel()  # the stream would stay open for updates
        return {"svids": [svid.spiffe_id for svid in reply.svids]}
    except GRPCError as err:
        return {"status": err.status.name, "message": err.message}
    finally:
        channel.close()

print(json.dumps(asyncio.run(fetch())), flush=True)
'''


def test_a_caller_gone_before_its_attestation_ends_gets_nothing(server: ServerDaemon, tmp_path: Path) -> None:
    """Regression guard: without the check after attestation, another process holding the
    connection of a caller that exited meanwhile received the caller's SVID (and a process
    reusing the PID would have been served as the exited caller)."""
    probed = ProbedAgent(tmp_path, server, delay=1.0)
    try:
        script = tmp_path / "caller.py"
        script.write_text(CALLER)
        result = subprocess.run(
            [sys.executable, str(script), str(probed.daemon.socket_path), str(probed.log)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        answer: dict[str, Any] = json.loads(result.stdout)
        assert "svids" not in answer, answer
        assert answer["status"] in ("PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE"), answer
        # Still serving callers that stay.
        assert _fetch_x509_ids(probed.daemon) == ["spiffe://example.org/probed"]
    finally:
        probed.daemon.stop()
