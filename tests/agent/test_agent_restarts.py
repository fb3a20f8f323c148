"""An agent killed (SIGKILL) and started again (reliability case 21), for a one-time and a re-attestable node.

(a) disk KeyManager and a valid saved SVID: the SVID is loaded, nothing attests again (a join
token is never spent twice), workloads are served. (b) memory KeyManager and (c) a saved SVID
past its NotAfter: a re-attestable node attests again; a join-token node cannot, and exits
with the reason instead of running without an identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from base64 import b64decode
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerClient
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe import TrustDomain
from pyspire.transport import unix_socket_in_use

from tests.agent.test_end_to_end import _entry
from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_server
from tests.support.pki import Issued, make_ca
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import eventually
from tests.support.workloads import x509_context
from tests.support.x509pop_nodes import PopNode

UID = os.getuid()
ROOT = make_ca(name="fleet root")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    (directory / "roots.pem").write_bytes(pem(ROOT.certificate))
    daemon = start_server(
        directory,
        extra='agent_ttl = "15s"\n    ratelimit {\n attestation = false\n }',
        plugins=(
            f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{directory / "roots.pem"}"\n }}\n }}'
        ),
    )
    yield daemon
    daemon.stop()


def _agent(directory: Path, server: ServerDaemon, kind: str, key_manager: str) -> tuple[AgentDaemon, str]:
    """An agent of ``kind`` (``join_token`` or ``x509pop``) with ``key_manager``; and its entry's parent."""
    directory.mkdir(parents=True, exist_ok=True)
    extra_args: list[str] = []
    if kind == "x509pop":
        node = node_certificate(ROOT, common_name=directory.name)
        (directory / "node.pem").write_bytes(pem(node.certificate))
        (directory / "node.key").write_bytes(key_pem(node.key))
        attestor = (
            'NodeAttestor "x509pop" {\n plugin_data {\n'
            f' private_key_path = "{directory / "node.key"}"\n certificate_path = "{directory / "node.pem"}"\n'
            " }\n }"
        )
        fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        parent = f"spiffe://example.org/spire/agent/x509pop/{fingerprint}"
        text, socket_path = agent_config(directory, server, node_attestor=attestor)
    else:
        parent = f"spiffe://example.org/node/{directory.name}"
        text, socket_path = agent_config(directory, server)
        extra_args = ["-joinToken", server.join_token(parent)]
    if key_manager == "memory":
        text, replaced = re.subn(
            r'KeyManager "disk" \{\s*plugin_data \{[^}]*\}\s*\}', 'KeyManager "memory" {\n plugin_data {}\n }', text
        )
        assert replaced == 1
    return AgentDaemon("pyspire-agent", directory, socket_path, text, extra_args), parent


def _saved_not_after(agent: AgentDaemon) -> datetime:
    saved = json.loads((agent.directory / "data" / "agent-data.json").read_text())
    return x509.load_der_x509_certificate(b64decode(saved["svid"][0])).not_valid_after_utc


def _killed_and_restarted(*agents: AgentDaemon, after_expiry: bool = False) -> list[str]:
    """SIGKILL each, optionally wait until every saved SVID has expired, start each again: the new logs.

    The agents are killed together, so their saved SVIDs expire during one wait, not one after another.
    """
    for agent in agents:
        assert agent.process is not None
        agent.process.kill()
        agent.process.wait()
        agent.process = None
    if after_expiry:
        last = max(_saved_not_after(agent) for agent in agents)
        time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds() + 1))
    marks = [len(agent.log()) for agent in agents]
    for agent in agents:
        agent.start(wait=False)
    return [_log_since(agent, mark) for agent, mark in zip(agents, marks, strict=True)]


def _log_since(agent: AgentDaemon, mark: int) -> str:
    assert agent.process is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            return agent.log()[mark:]
        if agent.socket_path.exists() and "Agent started" in agent.log()[mark:]:
            return agent.log()[mark:]
        time.sleep(0.1)
    raise AssertionError(f"the agent neither started nor stopped:\n{agent.log()[mark:]}")


@pytest.mark.parametrize("kind", ["join_token", "x509pop"])
def test_a_killed_agent_with_its_saved_svid_comes_back_without_attesting(
    server: ServerDaemon, tmp_path: Path, kind: str
) -> None:
    agent, parent = _agent(tmp_path / f"a-{kind}", server, kind, "disk")
    agent.start()
    try:
        _entry(server, parent, f"spiffe://example.org/restart-a-{kind}", f"unix:uid:{UID}")
        eventually(lambda: x509_context(agent).svids, timeout=30)
        (log,) = _killed_and_restarted(agent)
        assert "Loaded the saved agent SVID" in log
        if kind == "join_token":  # its one-time evidence is not spent again (x509pop may renew by attesting)
            assert "Node attestation was successful" not in log
        assert eventually(lambda: x509_context(agent).svids, timeout=30)
    finally:
        agent.stop()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["memory-key-manager", "expired-svid"])
def test_a_killed_agent_that_lost_its_svid_attests_again_only_if_it_can(
    server: ServerDaemon, tmp_path: Path, case: str
) -> None:
    key_manager = "memory" if case == "memory-key-manager" else "disk"
    agents = {
        # Short directories: the socket paths below tmp_path must fit within AF_UNIX's 108 bytes.
        kind: _agent(tmp_path / kind, server, kind, key_manager)
        for kind in ("join_token", "x509pop")
    }
    try:
        for kind, (agent, parent) in agents.items():
            agent.start()
            _entry(server, parent, f"spiffe://example.org/restart-{case}-{kind}", f"unix:uid:{UID}")
            eventually(lambda agent=agent: x509_context(agent).svids, timeout=30)
        restarted = _killed_and_restarted(*(agent for agent, _ in agents.values()), after_expiry=case == "expired-svid")
        logs = dict(zip(agents, restarted, strict=True))

        reattesting, _ = agents["x509pop"]
        assert "Node attestation was successful" in logs["x509pop"]
        assert eventually(lambda: x509_context(reattesting).svids, timeout=30)

        one_time, _ = agents["join_token"]
        assert one_time.process is not None
        assert one_time.process.wait(60) == 1
        assert "join token does not exist or has already been used" in one_time.log()
        assert not unix_socket_in_use(one_time.socket_path)
    finally:
        for agent, _ in agents.values():
            agent.stop()


def _stolen_identity(agent: AgentDaemon) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """The agent SVID and its private key, read from the agent's data directory (disk KeyManager)."""
    data = agent.directory / "data"
    saved = json.loads((data / "agent-data.json").read_text())
    keys = json.loads((data / "keys.json").read_text())["keys"]
    chain = [x509.load_der_x509_certificate(b64decode(c)) for c in saved["svid"]]
    key = serialization.load_der_private_key(b64decode(keys[saved["key_id"]]), password=None)
    return chain, key


def _renew_a_stolen_copy(
    runner: asyncio.Runner, agent: AgentDaemon, port: int, roots: list[x509.Certificate]
) -> ServerClient:
    """Copy the agent's saved SVID and key, renew with them and use the renewal once.

    From that first use the server takes only the thief's serial. The agent renews every
    7.5 s (agent_ttl 15 s): when its own renewal lands between the copy and the use, the
    server refuses the thief's stale renewal, and the copy is taken again.
    """
    for attempt in range(3):
        chain, key = _stolen_identity(agent)
        thief = ServerClient([("127.0.0.1", port)], TrustDomain.parse("example.org"))
        thief.set_roots(roots)
        thief.set_identity(chain, key)
        try:
            new_key = ec.generate_private_key(ec.SECP256R1())
            renewed = runner.run(thief.renew(build_csr(LocalSigner(new_key))))
            thief.set_identity(list(renewed), new_key)
            runner.run(thief.sync_entries({}))
            return thief
        except GRPCError as err:
            thief.close()
            if attempt == 2 or "expected to have serial number" not in (err.message or ""):
                raise
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", ["join_token", "x509pop"])
def test_a_running_agent_whose_svid_was_replaced_attests_again_or_stops(
    server: ServerDaemon, tmp_path: Path, kind: str
) -> None:
    """Reliability case 18 from the agent's side: someone holding a copy of the agent's identity
    makes the server replace the agent's SVID (a join-token node's stolen SVID renewed and used;
    an x509pop node's certificate attested again). At its next sync the running agent is told
    AGENT_NOT_ACTIVE: the x509pop agent attests again and keeps serving its workloads, the
    join-token agent cannot and exits with the reason, without
    spending its token again. Neither keeps running with an SVID the
    server refuses (SPIRE issue #1562)."""
    agent, parent = _agent(tmp_path / kind[:4], server, kind, "disk")
    agent.start()
    runner = asyncio.Runner()
    try:
        _entry(server, parent, f"spiffe://example.org/replaced-{kind}", f"unix:uid:{UID}")
        eventually(lambda: x509_context(agent).svids, timeout=30)
        mark = len(agent.log())
        roots = [c for c in x509.load_pem_x509_certificates(server.bundle_pem().encode())]
        if kind == "join_token":
            thief = _renew_a_stolen_copy(runner, agent, server.port, roots)
        else:
            node = Issued(
                x509.load_pem_x509_certificate((agent.directory / "node.pem").read_bytes()),
                serialization.load_pem_private_key((agent.directory / "node.key").read_bytes(), password=None),  # type: ignore[arg-type]
            )
            thief, _, _ = runner.run(PopNode(tmp_path / "thief", node).attest(server.port, roots))
        thief.close()

        assert agent.process is not None
        if kind == "join_token":
            assert agent.process.wait(60) == 1
            log = agent.log()[mark:]
            # SPIRE's AGENT_NOT_ACTIVE message, and no attempt to spend the token again.
            assert "expected to have serial number" in log, log
            assert "its attestor cannot re-attest" in log, log
            assert not unix_socket_in_use(agent.socket_path)
        else:
            eventually(lambda: "Node attestation was successful" in agent.log()[mark:], timeout=60)
            assert eventually(lambda: x509_context(agent).svids, timeout=30)
            assert agent.process.poll() is None

            def server_takes_the_saved_svid() -> bool:
                client = ServerClient([("127.0.0.1", server.port)], TrustDomain.parse("example.org"))
                client.set_roots(roots)
                try:
                    client.set_identity(*_stolen_identity(agent))
                    runner.run(client.sync_entries({}))
                except (GRPCError, KeyError, ValueError):
                    return False  # the attestation's SVID is not saved yet
                finally:
                    client.close()
                return True

            # The SVID the agent saved after attesting again is the one the server takes.
            assert eventually(server_takes_the_saved_svid, timeout=30)
            refreshed, _ = _stolen_identity(agent)
            assert refreshed[0].serial_number != node.certificate.serial_number
    finally:
        runner.close()
        agent.stop()


def test_an_agent_cut_off_from_its_server_keeps_serving_and_resyncs_without_attesting(
    server: ServerDaemon, tmp_path: Path
) -> None:
    """Reliability case 21, the network cut (SPIRE's ghostunnel-federation 10-13): a join-token
    agent reaches its server through a relay that is cut for a while. Its workloads keep their
    SVIDs meanwhile; once the relay is back an entry created during the cut reaches them and the
    agent SVID is renewed, and the one-time token is never presented again."""
    relay = TcpRelay(("127.0.0.1", server.port)).restore()
    directory = tmp_path / "cut"
    parent = "spiffe://example.org/node/cut"
    text, socket_path = agent_config(directory, server)
    text = text.replace(f'server_port = "{server.port}"', f'server_port = "{relay.port}"')
    assert f'server_port = "{relay.port}"' in text
    agent = AgentDaemon("pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token(parent)])
    agent.start()
    try:
        _entry(server, parent, "spiffe://example.org/before-the-cut", f"unix:uid:{UID}")
        served = eventually(lambda: x509_context(agent).svids, timeout=30)
        attested_svid = _saved_not_after(agent)
        mark = len(agent.log())

        relay.cut()
        _entry(server, parent, "spiffe://example.org/during-the-cut", f"unix:uid:{UID}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # several sync intervals without the server
            assert x509_context(agent).svids[0].leaf == served[0].leaf
            time.sleep(0.5)
        assert agent.process is not None
        assert agent.process.poll() is None

        relay.restore()

        def both() -> list[str] | None:
            found = sorted(str(s.spiffe_id) for s in x509_context(agent).svids)
            return found if len(found) == 2 else None

        assert eventually(both, timeout=30) == [
            "spiffe://example.org/before-the-cut",
            "spiffe://example.org/during-the-cut",
        ]
        eventually(lambda: _saved_not_after(agent) > attested_svid, timeout=30)  # renewed, not re-attested
        log = agent.log()[mark:]
        assert "Node attestation was successful" not in log
        assert agent.process.poll() is None
    finally:
        agent.stop()
        relay.cut()


@pytest.mark.slow
def test_an_agent_cut_off_longer_than_its_svid_life_attests_again_or_stops(
    server: ServerDaemon, tmp_path: Path
) -> None:
    """Reliability cases 21 (a cut longer than the agent SVID's life) and 18 (a running agent
    whose own SVID has expired). As SPIRE's rotator: an agent SVID that expired unrenewed is not
    used again. Once the server is back the x509pop agent attests again and keeps serving its
    workload; the join-token agent, which cannot, stops naming the expiry, and never presents its
    spent token again. Without this both retried forever with an SVID the server's handshake
    refuses."""
    relay = TcpRelay(("127.0.0.1", server.port)).restore()
    agents = []
    try:
        for kind in ("x509pop", "join_token"):
            agent, parent = _agent(tmp_path / f"long-{kind}", server, kind, "disk")
            agent.config_text = agent.config_text.replace(
                f'server_port = "{server.port}"', f'server_port = "{relay.port}"'
            )
            agent.start()
            agents.append(agent)
            _entry(server, parent, f"spiffe://example.org/long-cut-{kind}", f"unix:uid:{UID}")
            eventually(lambda agent=agent: x509_context(agent).svids, timeout=30)
        reattesting, token_holder = agents
        marks = [len(agent.log()) for agent in agents]

        relay.cut()
        expiry = max(_saved_not_after(agent) for agent in agents)
        time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds() + 2))
        relay.restore()

        assert token_holder.process is not None
        assert token_holder.process.wait(60) == 1
        log = token_holder.log()[marks[1] :]
        assert "the agent SVID expired" in log, log
        assert "cannot re-attest" in log, log
        assert "Node attestation was successful" not in log
        assert not unix_socket_in_use(token_holder.socket_path)

        eventually(lambda: "Node attestation was successful" in reattesting.log()[marks[0] :], timeout=60)
        eventually(lambda: _saved_not_after(reattesting) > datetime.now(UTC), timeout=30)
        served = eventually(lambda: x509_context(reattesting).svids, timeout=30)
        assert str(served[0].spiffe_id) == "spiffe://example.org/long-cut-x509pop"
        assert reattesting.process is not None
        assert reattesting.process.poll() is None
    finally:
        for agent in agents:
            agent.stop()
        relay.cut()
