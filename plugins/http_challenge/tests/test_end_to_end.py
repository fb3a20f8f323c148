"""A real server and agent attesting with http_challenge on this machine.

The agent serves its nonce on a random (non-root) port, which the server allows with
``allow_non_root_ports`` and therefore only with trust on first use. The server fetches it
from ``127.0.0.1`` (``localhost`` itself is refused by SPIRE's rule), names the agent after
that host, and a workload under the agent gets its SVID. A second agent claiming the same
host is refused: the host has attested once already.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

SERVER_ATTESTOR = """NodeAttestor "http_challenge" {
    plugin_data {
        allowed_dns_patterns = ["^127[.]0[.]0[.]1$"]
        allow_non_root_ports = true
    }
}"""
AGENT_ATTESTOR = """NodeAttestor "http_challenge" {
    plugin_data {
        hostname = "127.0.0.1"
    }
}"""
AGENT_ID = "spiffe://example.org/spire/agent/http_challenge/127.0.0.1"


@pytest.mark.slow
def test_an_agent_attests_by_http_challenge_and_the_same_host_cannot_attest_again(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", plugins=SERVER_ATTESTOR)
    agents: list[AgentDaemon] = []
    try:
        agents.append(start_agent(tmp_path / "agent", server, node_attestor=AGENT_ATTESTOR))
        agent = agents[0]
        shown = server.cli("agent", "show", "-spiffeID", AGENT_ID).stdout
        assert "Attestation type  : http_challenge" in shown
        assert "Can re-attest     : false" in shown
        assert "Selectors         : http_challenge:hostname:127.0.0.1" in shown
        assert "Verifying challenge" in server.log()

        register_this_process(server, AGENT_ID, "spiffe://example.org/web")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/web"

        agents.append(start_agent(tmp_path / "second", server, node_attestor=AGENT_ATTESTOR, wait=False))
        second = agents[1].process
        assert second is not None
        assert second.wait(30) == 1, agents[1].log()
        assert "the server refused attestation (PERMISSION_DENIED)" in agents[1].log()
        assert "attestation data has already been used to attest an agent" in agents[1].log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (*reversed(agents), server):
            daemon.stop()
