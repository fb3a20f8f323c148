"""Hostile and malformed calls to the Workload API of a real agent."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub
from pyspire.spiffe.workloadapi import HEADER, WorkloadApiClient

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("deployment")
    server = start_server(directory / "server", extra="audit_log_enabled = true")  # each call logged by method
    alias = "spiffe://example.org/node/input"
    agent = start_agent(directory / "agent", server, server.join_token(alias))
    _entry(server, alias, "spiffe://example.org/caller", f"unix:uid:{UID}")
    eventually(lambda: x509_context(agent))
    yield server, agent
    agent.stop()
    server.stop()


async def _call(agent: AgentDaemon, method: str, request: Any, metadata: Any) -> Any:
    channel = Channel(path=str(agent.socket_path))
    stub = SpiffeWorkloadAPIStub(channel)
    try:
        target = getattr(stub, method)
        if method in ("FetchJWTSVID", "ValidateJWTSVID"):
            return await target(request, metadata=metadata, timeout=10)
        async with target.open(metadata=metadata, timeout=10) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


def call(agent: AgentDaemon, method: str, request: Any, metadata: Any = HEADER) -> Any:
    return asyncio.run(_call(agent, method, request, metadata))


REQUESTS = {
    "FetchX509SVID": pb.X509SVIDRequest(),
    "FetchX509Bundles": pb.X509BundlesRequest(),
    "FetchJWTBundles": pb.JWTBundlesRequest(),
    "FetchJWTSVID": pb.JWTSVIDRequest(audience=["a"]),
    "ValidateJWTSVID": pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z"),
}


@pytest.mark.parametrize("method", sorted(REQUESTS))
@pytest.mark.parametrize(
    "metadata",
    [None, {"workload.spiffe.io": "True"}, [("workload.spiffe.io", "true"), ("workload.spiffe.io", "true")]],
    ids=["missing", "wrong-value", "repeated"],
)
def test_every_method_requires_exactly_the_security_header(
    deployment: tuple[ServerDaemon, AgentDaemon], method: str, metadata: Any
) -> None:
    _, agent = deployment
    with pytest.raises(GRPCError) as raised:
        call(agent, method, REQUESTS[method], metadata)
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert raised.value.message == "security header missing from request"


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (pb.JWTSVIDRequest(), Status.INVALID_ARGUMENT),
        (pb.JWTSVIDRequest(audience=["a"], spiffe_id="not a spiffe id"), Status.INVALID_ARGUMENT),
        (pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/someone-else"), Status.PERMISSION_DENIED),
    ],
    ids=["no-audience", "malformed-id", "not-entitled"],
)
def test_fetch_jwt_svid_bad_input(deployment: tuple[ServerDaemon, AgentDaemon], request_: Any, status: Status) -> None:
    """Reliability case 3: refused by the agent, which asks the server for nothing."""
    server, agent = deployment
    minted = server.log().count("NewJWTSVID")
    with pytest.raises(GRPCError) as raised:
        call(agent, "FetchJWTSVID", request_)
    assert raised.value.status is status
    assert server.log().count("NewJWTSVID") == minted


def test_a_jwt_svid_for_a_new_audience_is_minted_by_the_server(deployment: tuple[ServerDaemon, AgentDaemon]) -> None:
    """What the refusals above are measured against: a good request reaches NewJWTSVID."""
    server, agent = deployment
    minted = server.log().count("NewJWTSVID")
    reply = call(agent, "FetchJWTSVID", pb.JWTSVIDRequest(audience=[f"audience-{uuid.uuid4()}"]))
    assert reply.svids
    assert eventually(lambda: server.log().count("NewJWTSVID") > minted, timeout=10)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def genuine_token(agent: AgentDaemon) -> str:
    """A JWT-SVID for audience "a", fetched by this process."""

    async def fetch() -> str:
        async with WorkloadApiClient(f"unix://{agent.socket_path}") as client:
            return (await client.fetch_jwt_svids(["a"]))[0].token

    return asyncio.run(fetch())


def _hostile_tokens(agent: AgentDaemon) -> dict[str, str]:
    token = genuine_token(agent)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    now = int(time.time())
    stranger = ec.generate_private_key(ec.SECP256R1())
    stranger_pem = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def signed(new_claims: dict[str, Any], new_header: dict[str, Any]) -> str:
        return pyjwt.encode(new_claims, stranger_pem, algorithm="ES256", headers=new_header)

    return {
        "not-a-jws": "definitely not a token",
        "alg-none": f"{_b64({'alg': 'none', 'kid': header['kid'], 'typ': 'JWT'})}.{_b64(claims)}.",
        "hs256-with-public-key": f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}.{base64.urlsafe_b64encode(b'x' * 32).rstrip(b'=').decode()}",
        "no-exp": signed({k: v for k, v in claims.items() if k != "exp"}, {"kid": header["kid"]}),
        "no-kid": signed(claims, {}),
        "unknown-kid": signed(claims, {"kid": "nobody-knows-me"}),
        "forged-with-known-kid": signed(claims, {"kid": header["kid"]}),
        "expired": signed({**claims, "exp": now - 120}, {"kid": header["kid"]}),
        "foreign-trust-domain": signed({**claims, "sub": "spiffe://other.org/x"}, {"kid": header["kid"]}),
        "genuine-wrong-audience": token,
        "alg-is-a-list": f"{_b64({**header, 'alg': []})}.{_b64(claims)}.{token.split('.')[2]}",
        "typ-foo": signed(claims, {"kid": header["kid"], "typ": "foo"}),
        "no-sub": signed({k: v for k, v in claims.items() if k != "sub"}, {"kid": header["kid"]}),
        "sub-not-a-spiffe-id": signed({**claims, "sub": "https://example.org/x"}, {"kid": header["kid"]}),
        "no-aud": signed({k: v for k, v in claims.items() if k != "aud"}, {"kid": header["kid"]}),
        "exp-beyond-any-date": f"{token.split('.')[0]}.{_b64({**claims, 'exp': 10**400})}.{token.split('.')[2]}",
        "json-serialization-two-signatures": json.dumps(
            {
                "payload": token.split(".")[1],
                "signatures": [
                    {"protected": token.split(".")[0], "signature": token.split(".")[2]},
                    {"protected": _b64({"alg": "ES256", "kid": "nobody-knows-me"}), "signature": "AAAA"},
                ],
            }
        ),
    }


def test_validate_refuses_hostile_tokens(deployment: tuple[ServerDaemon, AgentDaemon]) -> None:
    _, agent = deployment
    hostile = _hostile_tokens(agent)
    for name, token in hostile.items():
        audience = "other" if name == "genuine-wrong-audience" else "a"
        with pytest.raises(GRPCError) as raised:
            call(agent, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience=audience, svid=token))
        assert raised.value.status is Status.INVALID_ARGUMENT, name
    for request in (pb.ValidateJWTSVIDRequest(audience="a"), pb.ValidateJWTSVIDRequest(svid=genuine_token(agent))):
        with pytest.raises(GRPCError) as raised:
            call(agent, "ValidateJWTSVID", request)
        assert raised.value.status is Status.INVALID_ARGUMENT
    # The agent logged none of the rejected tokens, and no traceback (each was an answer, not a crash).
    log = agent.log()
    assert "nobody-knows-me" not in log
    assert not [name for name, token in hostile.items() if token.split(".")[-1] and token.split(".")[-1] in log]
    assert not [name for name, token in hostile.items() if token in log]  # nor any token whole
    assert "Traceback" not in log
    # ...and it still validates a genuine one.
    genuine = genuine_token(agent)
    reply = call(agent, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="a", svid=genuine))
    assert reply.spiffe_id == "spiffe://example.org/caller"


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_dropped_before_attestation_leak_nothing(deployment: tuple[ServerDaemon, AgentDaemon]) -> None:
    _, agent = deployment
    assert agent.process is not None
    pid = agent.process.pid
    baseline = _open_fds(pid)
    for _ in range(1000):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(agent.socket_path))
        sock.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the start of an HTTP/2 connection, then gone
        sock.close()
    eventually(lambda: _open_fds(pid) <= baseline + 5, timeout=20)
    # Still serving.
    assert x509_context(agent).default_svid is not None


def test_socket_path_is_reported_when_agent_is_missing(tmp_path: Path) -> None:
    result = AgentDaemon("pyspire-agent", tmp_path, tmp_path / "none.sock", "").cli("api", "fetch", "x509", check=False)
    assert result.returncode == 1
    assert "cannot reach the agent" in result.stderr


DEAD_CALLER = """
import json, os, socket, sys, time
import h2.config, h2.connection, h2.events
from pyspire.proto.spiffe.workload import workload_pb2 as pb

socket_path, count = sys.argv[1], int(sys.argv[2])
if os.fork():
    os.wait()  # reap the caller at once: its PID is gone, not a zombie
    os._exit(0)
connections = []
for _ in range(count):
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(socket_path)  # SO_PEERCRED: this process, about to exit
    connections.append(connection)
caller = os.getpid()
if os.fork():
    os._exit(0)
while os.path.exists(f"/proc/{caller}"):
    time.sleep(0.01)
message = pb.X509SVIDRequest().SerializeToString()
streams = []
for connection in connections:
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2c.initiate_connection()
    h2c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
                         (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
                         ("workload.spiffe.io", "true")])
    h2c.send_data(1, bytes(1) + len(message).to_bytes(4, "big") + message, end_stream=True)
    try:
        connection.sendall(h2c.data_to_send())
    except OSError:  # closed at accept: a caller that cannot be pinned is not served at all
        h2c = None
    streams.append(h2c)
svids = answered = closed = 0
deadline = time.monotonic() + 60
for connection, h2c in zip(connections, streams):
    if h2c is None:
        closed += 1
        connection.close()
        continue
    connection.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                closed += 1
                break
            events = h2c.receive_data(chunk)
            svids += sum(isinstance(e, h2.events.DataReceived) and b"spiffe://" in e.data for e in events)
            if any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in events):
                answered += 1
                break
    except socket.timeout:
        pass  # neither answered nor closed: counted by its absence
    except OSError:
        closed += 1
    connection.close()
print(json.dumps({"answered": answered, "closed": closed, "svids": svids}), flush=True)
"""


@pytest.mark.slow
def test_five_thousand_callers_gone_before_attestation_get_nothing_and_leak_nothing(
    deployment: tuple[ServerDaemon, AgentDaemon], tmp_path: Path
) -> None:
    """Reliability case 5: connections whose caller (SO_PEERCRED) exited before its request was
    read; another process holds them and sends the request. No SVID (each is answered with an
    error, or closed at accept if the caller was gone by then), and the agent's descriptors
    return to where they were."""
    _, agent = deployment
    assert agent.process is not None
    pid = agent.process.pid
    baseline = _open_fds(pid)
    script = tmp_path / "dead_caller.py"
    script.write_text(DEAD_CALLER)
    result = subprocess.run(
        [sys.executable, str(script), str(agent.socket_path), "5000"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    outcome = json.loads(result.stdout or "{}")
    assert outcome.get("svids") == 0, (outcome, result.stderr[-2000:])
    # Each one refused: answered with an error, or closed at accept when its caller was already gone.
    assert outcome.get("answered", 0) + outcome.get("closed", 0) == 5000, (outcome, result.stderr[-2000:])
    eventually(lambda: _open_fds(pid) <= baseline + 5, timeout=60)
    assert x509_context(agent).default_svid is not None
    assert "Traceback" not in agent.log()
