"""The workload library with other SPIFFE implementations: SPIRE's agent, go-spiffe's and java-spiffe's TLS.

- The mutual-TLS scenario of tests/library/test_rotation.py (tests/support/mtls_rotation.py),
  unchanged, with SPIRE's spire-agent serving the Workload API: five SVID rotations a side,
  the agent restarted mid-run, a CA rotation (prepare, activate, taint, revoke) and a wrong
  peer refused by each authorizer. The server is pyspire-server, whose CLI the scenario drives.
- pyspire.spiffe.tls contexts facing go-spiffe's tlsconfig and java-spiffe's provider (the
  peers of tests/peers), each side authorizing the other, and each side refusing a peer it
  does not authorize.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire.spiffe import SpiffeId, X509Source, tls

from tests.support.identities import CLIENT, SERVER, Deployment, start_deployment
from tests.support.mtls_rotation import EchoServer, run_through_everything_that_rotates
from tests.support.peer_workloads import PeerWorkload, PeerWorkloadError
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TD = "example.org"
UNIX = "discover_workload_path = true\n            workload_size_limit = -1"


def test_mtls_through_svid_rotations_an_agent_restart_and_a_ca_rotation_on_spire_agent(
    tmp_path: Path, spire_agent_bin: Path
) -> None:
    deployment = start_deployment(tmp_path, "-x509SVIDTTL", "16", agent_options={"executable": spire_agent_bin})
    try:
        run_through_everything_that_rotates(deployment)
    finally:
        deployment.agent.stop()
        deployment.server.stop()


def _peer_id(peer: PeerWorkload) -> str:
    return f"spiffe://{TD}/{peer.name}-peer"


def _executable(peer: PeerWorkload) -> str:
    """What the unix attestor finds as the peer's binary (/proc/<pid>/exe)."""
    if peer.name == "java-spiffe":
        return os.path.realpath(shutil.which("java") or "java")
    return os.path.realpath(peer.argv[0])


@pytest.fixture(scope="module")
def peers(workload_clients: dict[str, PeerWorkload]) -> list[PeerWorkload]:
    return [workload_clients["go-spiffe"], workload_clients["java-spiffe"]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, peers: list[PeerWorkload]) -> Iterator[Deployment]:
    # This process's three identities also select its interpreter, so the peers (same uid) get
    # only their own.
    python = f"unix:path:{os.path.realpath(sys.executable)}"
    deployment = start_deployment(
        tmp_path_factory.mktemp("tls-peers"), "-selector", python, agent_options={"unix_data": UNIX}
    )
    try:
        for peer in peers:
            deployment.server.cli(
                "entry", "create", "-parentID", deployment.alias, "-spiffeID", _peer_id(peer),
                "-selector", f"unix:path:{_executable(peer)}",
            )  # fmt: skip
        for peer in peers:
            eventually(lambda p=peer: p.run(deployment.agent, "x509"), timeout=60, interval=1)
        yield deployment
    finally:
        deployment.agent.stop()
        deployment.server.stop()


def _talk(context: ssl.SSLContext, address: str) -> str:
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        connection.sendall(b"hello\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = connection.recv(200)
            if not chunk:
                break
            reply += chunk
    if not reply:
        raise ConnectionError("the server closed the connection without answering")
    return reply.decode().strip()


def _wait_for_refusal(server: EchoServer) -> BaseException:
    deadline = time.monotonic() + 20
    while not server.refusals and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.refusals, "the server recorded no refusal"
    return server.refusals[0]


@pytest.mark.parametrize("name", ["go-spiffe", "java-spiffe"])
def test_a_peer_dials_a_spiffe_server_context(fleet: Deployment, peers: list[PeerWorkload], name: str) -> None:
    (peer,) = [p for p in peers if p.name == name]
    with fleet.source("server") as source:
        server = EchoServer(tls.server_context(source, tls.authorize_id(_peer_id(peer))))
        try:
            address = f"{server.address[0]}:{server.address[1]}"
            dialed = peer.run(fleet.agent, "dial", "-address", address, "-authorize", SERVER)
            assert dialed["server"] == SERVER
            assert int(dialed["reply"]) > 0  # the serial of the peer's leaf, as the server saw it
            assert server.refusals == []
        finally:
            server.close()

        # A server that authorizes someone else refuses the peer inside the handshake.
        wary = EchoServer(tls.server_context(source, tls.authorize_id(CLIENT)))
        try:
            with pytest.raises(PeerWorkloadError):
                peer.run(fleet.agent, "dial", "-address", f"{wary.address[0]}:{wary.address[1]}", "-authorize", SERVER)
            refusal = _wait_for_refusal(wary)
            assert isinstance(refusal, tls.PeerRefusedError)
            assert refusal.spiffe_id == SpiffeId.parse(_peer_id(peer))
        finally:
            wary.close()


@pytest.mark.parametrize("name", ["go-spiffe", "java-spiffe"])
def test_a_spiffe_client_context_dials_a_peer(fleet: Deployment, peers: list[PeerWorkload], name: str) -> None:
    (peer,) = [p for p in peers if p.name == name]
    with fleet.source("client") as client_source, fleet.source("intruder") as intruder_source:
        listener = peer.start(fleet.agent, "serve", "-authorize", CLIENT, "-connections", "3")
        try:
            ready = listener.next_line(60)
            assert ready["spiffe_id"] == _peer_id(peer)
            address = str(ready["listening"])

            client = tls.client_context(client_source, tls.authorize_id(_peer_id(peer)))
            assert _talk(client, address) == f"{_peer_id(peer)} answers {CLIENT}: hello"
            assert listener.next_line(30) == {"client": CLIENT, "said": "hello"}

            # The client refuses a server it does not authorize, before sending anything.
            wary = tls.client_context(client_source, tls.authorize_id(SERVER))
            with pytest.raises(tls.PeerRefusedError) as refused:
                _talk(wary, address)
            assert refused.value.spiffe_id == SpiffeId.parse(_peer_id(peer))
            # The peer saw the handshake end and then nothing: go-spiffe's reports the read that
            # failed, java-spiffe's an empty line ("null").
            heard = listener.next_line(30)
            assert "refused" in heard or heard.get("said") == "null", heard

            # The peer refuses a client it does not authorize.
            intruder = tls.client_context(intruder_source, tls.authorize_id(_peer_id(peer)))
            with pytest.raises(OSError):  # ssl.SSLError, a reset, or closed without an answer
                _talk(intruder, address)
            assert "refused" in listener.next_line(30)
        finally:
            listener.stop()


def test_the_sources_see_the_peers_identities_apart(fleet: Deployment) -> None:
    # Sanity of the fixture: this process's source holds only its own three identities.
    with X509Source(fleet.agent.address) as source:
        assert sorted(str(s.spiffe_id) for s in source.svids) == sorted(
            f"spiffe://{TD}/{name}" for name in ("server", "client", "intruder")
        )
