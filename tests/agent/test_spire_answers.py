"""Answers pyspire-agent gives as spire-agent v1.13 does, where the differential corpus found them apart.

The expected words are spire-agent's, as tests/interop/differential/test_workload_api.py
recorded them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub
from pyspire.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from pyspire.spiffe.workloadapi import HEADER

from tests.support.daemons import AgentDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

ALIAS = "spiffe://example.org/node/answers"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    directory: Path = tmp_path_factory.mktemp("answers")
    server = start_server(directory / "server", log_level="WARN")
    try:
        register_this_process(server, ALIAS, "spiffe://example.org/answers")
        admin = directory / "admin" / "admin.sock"
        daemon = start_agent(
            directory / "agent", server, server.join_token(ALIAS), extra=f'admin_socket_path = "{admin}"'
        )
        try:
            eventually(lambda: fetched_spiffe_id(daemon) == "spiffe://example.org/answers", timeout=30)
            yield daemon
        finally:
            daemon.stop()
    finally:
        server.stop()


def _token(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.c2lnbmF0dXJl"


STRANGER = _token(
    {"sub": "spiffe://example.org/answers", "aud": ["a"], "exp": int(time.time()) + 600},
    {"alg": "ES256", "kid": "stranger", "typ": "JWT"},
)


async def _call(stub: SpiffeWorkloadAPIStub, method: str, request: Any) -> None:
    if method in ("FetchWITSVID", "FetchWITBundles"):
        async with getattr(stub, method).open(metadata=HEADER) as stream:
            await stream.send_message(request, end=True)
            await stream.recv_message()
    else:
        await getattr(stub, method)(request, metadata=HEADER, timeout=10)


async def _refusal(agent: AgentDaemon, method: str, request: Any) -> tuple[str, str]:
    channel = Channel(path=str(agent.socket_path))
    try:
        with pytest.raises(GRPCError) as raised:
            await _call(SpiffeWorkloadAPIStub(channel), method, request)
    finally:
        channel.close()
    return raised.value.status.name, raised.value.message or ""


@pytest.mark.parametrize(
    ("method", "request_message", "answer"),
    [
        (
            "FetchJWTSVID",
            pb.JWTSVIDRequest(audience=["a"], spiffe_id="not-an-id"),
            ("INVALID_ARGUMENT", "invalid requested SPIFFE ID: scheme is missing or invalid"),
        ),
        (
            "ValidateJWTSVID",
            pb.ValidateJWTSVIDRequest(audience="a", svid=STRANGER),
            ("INVALID_ARGUMENT", 'public key "stranger" not found in trust domain "example.org"'),
        ),
        (
            "FetchWITSVID",
            pb.WITSVIDRequest(),
            ("UNIMPLEMENTED", "unknown method FetchWITSVID for service SpiffeWorkloadAPI"),
        ),
        (
            "FetchWITBundles",
            pb.WITBundlesRequest(),
            ("UNIMPLEMENTED", "unknown method FetchWITBundles for service SpiffeWorkloadAPI"),
        ),
    ],
    ids=["malformed requested id", "unknown key", "wit svid", "wit bundles"],
)
async def test_workload_api_refuses_in_spire_agents_words(
    agent: AgentDaemon, method: str, request_message: Any, answer: tuple[str, str]
) -> None:
    assert await _refusal(agent, method, request_message) == answer


async def test_validation_errors_lose_the_librarys_prefix(agent: AgentDaemon) -> None:
    wrong_audience = _token({"sub": "spiffe://example.org/answers", "aud": ["a"]}, {"alg": "none"})
    code, message = await _refusal(
        agent, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="a", svid=wrong_audience)
    )
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("unable to parse JWT token: ")


async def test_debug_info_shows_the_agent_chain_up_to_the_root(agent: AgentDaemon) -> None:
    channel = Channel(path=str(agent.directory.parent / "admin" / "admin.sock"))
    try:
        reply = await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest(), timeout=10)
    finally:
        channel.close()
    ids = [f"spiffe://{c.id.trust_domain}{c.id.path}" for c in reply.svid_chain]
    assert ids[0].startswith("spiffe://example.org/spire/agent/join_token/")
    assert ids[1:] == ["spiffe://example.org"]
    assert reply.svid_chain[1].subject.startswith("SERIALNUMBER=")
