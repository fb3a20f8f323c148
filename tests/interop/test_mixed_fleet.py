"""Scenarios 1 and 2: a spire-agent on pyspire-server, and a pyspire-agent on spire-server.

Both daemons of both implementations read one config layout (tests/support/daemons writes it
once). Whatever the mix, what the agent hands workloads verifies against its *server's* bundle
(pyspire's verifier and openssl), rotates under short TTLs, and the agent's own SVID is
renewed (RenewAgent; SPIRE v1.13's agent posts no status, and neither does pyspire's). Ban and
eviction do what SPIRE's server does to SPIRE's agent: a banned agent deletes its SVID and
stops; an evicted agent re-attests when its attestor can (x509pop), else deletes its SVID and
stops (join_token).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.interop_checks import check_workload_identity, x509_svid_of
from tests.support.pki import Issued, make_ca
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process

pytestmark = pytest.mark.slow

TD = "example.org"


@dataclass(frozen=True)
class Mix:
    """Which implementation serves and which attests (None: pyspire's)."""

    server: Path | None
    agent: Path | None

    @property
    def agent_is_spire(self) -> bool:
        return self.agent is not None


@pytest.fixture(scope="module")
def fleet_root() -> Issued:
    return make_ca(name="interop fleet root")


@pytest.fixture(scope="module", params=["spire-agent-on-pyspire-server", "pyspire-agent-on-spire-server"])
def mix(request: pytest.FixtureRequest, spire_server_bin: Path, spire_agent_bin: Path) -> Mix:
    if request.param == "spire-agent-on-pyspire-server":
        return Mix(server=None, agent=spire_agent_bin)
    return Mix(server=spire_server_bin, agent=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fleet_root: Issued, mix: Mix) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    (directory / "fleet.pem").write_bytes(pem(fleet_root.certificate))
    daemon = start_server(
        directory / "server",
        executable=mix.server,
        extra='agent_ttl = "30s"',
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{directory / "fleet.pem"}"\n }}\n }}',
    )
    yield daemon
    daemon.stop()


def _agent_serial(server: ServerDaemon, agent_id: str) -> str:
    shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
    return shown.split("Serial number     : ", 1)[1].split()[0] if "Serial number" in shown else ""


def _holds_svid(agent_dir: Path) -> bool:
    """Whether the agent's saved state (agent-data.json, in both implementations) holds an SVID."""
    state = agent_dir / "data" / "agent-data.json"
    return state.exists() and bool(json.loads(state.read_text()).get("svid"))


def _exits(agent: AgentDaemon, timeout: float = 30.0) -> None:
    assert agent.process is not None
    agent.process.wait(timeout)


def test_join_token_agent_serves_identities_that_rotate_until_it_is_banned(
    tmp_path: Path, server: ServerDaemon, mix: Mix
) -> None:
    token = server.join_token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    agent = start_agent(tmp_path / "agent", server, token, executable=mix.agent)
    try:
        assert "Attestation type  : join_token" in server.cli("agent", "show", "-spiffeID", agent_id).stdout

        workload = f"spiffe://{TD}/interop/join-token-workload"
        register_this_process(server, agent_id, workload, "-x509SVIDTTL", "20")
        first = eventually(lambda: check_workload_identity(agent, server, workload, TD), timeout=30)

        # A 20 s SVID is rotated at half its life (sooner: both servers backdate it).
        def rotated() -> bool:
            return x509_svid_of(agent, workload).chain[0].serial_number != first.chain[0].serial_number

        eventually(rotated, timeout=30, interval=1)
        check_workload_identity(agent, server, workload, TD)

        # The agent's own 30 s SVID is renewed with RenewAgent (a join token cannot re-attest).
        serial = _agent_serial(server, agent_id)
        eventually(lambda: _agent_serial(server, agent_id) not in ("", serial), timeout=40, interval=1)
        assert agent.process is not None
        assert agent.process.poll() is None

        server.cli("agent", "ban", "-spiffeID", agent_id)
        _exits(agent)
        if mix.agent_is_spire:
            assert "Agent is banned: removing SVID and shutting down" in agent.log()
        assert not _holds_svid(tmp_path / "agent")
    finally:
        agent.stop()


def test_evicted_join_token_agent_deletes_its_svid_and_stops(tmp_path: Path, server: ServerDaemon, mix: Mix) -> None:
    token = server.join_token()
    agent = start_agent(tmp_path / "agent", server, token, executable=mix.agent)
    try:
        assert _holds_svid(tmp_path / "agent")
        server.cli("agent", "evict", "-spiffeID", f"spiffe://{TD}/spire/agent/join_token/{token}")
        _exits(agent)
        if mix.agent_is_spire:
            assert "Agent failed re-attestation; removing SVID and shutting down" in agent.log()
        assert not _holds_svid(tmp_path / "agent")
    finally:
        agent.stop()


def test_x509pop_agent_attests_and_reattests_after_eviction(
    tmp_path: Path, server: ServerDaemon, mix: Mix, fleet_root: Issued
) -> None:
    node = node_certificate(fleet_root, common_name="interop-node")
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    agent_id = f"spiffe://{TD}/spire/agent/x509pop/{fingerprint}"
    attestor = (
        'NodeAttestor "x509pop" {\n plugin_data {\n'
        f' private_key_path = "{tmp_path / "node.key"}"\n certificate_path = "{tmp_path / "node.pem"}"\n }}\n }}'
    )
    agent = start_agent(tmp_path / "agent", server, node_attestor=attestor, executable=mix.agent)
    try:
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : x509pop" in shown
        assert "Can re-attest     : true" in shown
        assert "Selectors         : x509pop:subject:cn:interop-node" in shown
        workload = f"spiffe://{TD}/interop/x509pop-workload"
        register_this_process(server, agent_id, workload)
        eventually(lambda: check_workload_identity(agent, server, workload, TD), timeout=30)

        server.cli("agent", "evict", "-spiffeID", agent_id)
        if mix.agent_is_spire:
            eventually(lambda: "Agent needs to re-attest; will attempt to re-attest" in agent.log(), timeout=30)
        else:
            eventually(lambda: "asks this agent to attest again" in agent.log(), timeout=30)
        eventually(lambda: agent_id in server.cli("agent", "list").stdout, timeout=30)
        time.sleep(2)  # a few sync rounds on the new identity
        assert agent.process is not None
        assert agent.process.poll() is None
        check_workload_identity(agent, server, workload, TD)
    finally:
        agent.stop()
