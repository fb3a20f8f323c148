"""A real server and agent attesting with k8s_psat against the HTTPS Kubernetes API fake."""

from __future__ import annotations

import time
from pathlib import Path

from plugins.k8s_psat.tests.fakes import FakePod, KubeApiServer
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def test_agent_in_a_pod_attests_with_k8s_psat(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(kube.issue_token(agent_pod))
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "k8s_psat" {\n plugin_data {\n  clusters = {\n   "prod" = {\n'
            '    service_account_allow_list = ["spire:spire-agent"]\n'
            f'    kube_config_file = "{kube.kubeconfig(tmp_path)}"\n'
            '    allowed_pod_label_keys = ["app"]\n'
            "   }\n  }\n }\n }"
        ),
    )
    attestor = (
        f'NodeAttestor "k8s_psat" {{\n plugin_data {{\n  cluster = "prod"\n  token_path = "{token_file}"\n }}\n }}'
    )
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor)
        agent_id = f"spiffe://example.org/spire/agent/k8s_psat/prod/{kube.nodes['node-1'].uid}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Can re-attest     : true" in shown
        assert "Selectors         : k8s_psat:agent_pod_label:app:spire-agent" in shown

        register_this_process(server, agent_id, "spiffe://example.org/in-cluster")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/in-cluster"

        # Evicted while the API server is down (reliability case 12), the agent's attempts fail
        # closed, and it attests again with the (rotated) token of its pod once the API is back.
        token_file.write_text(kube.issue_token(agent_pod))
        attested = agent.log().count("Node attestation was successful")
        kube.unavailable = True
        server.cli("agent", "evict", "-spiffeID", agent_id)
        deadline = time.monotonic() + 30
        while agent.log().count("TokenReview in cluster 'prod' failed: HTTP 503") < 2:  # tried, and tried again
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.2)
        assert agent_id not in server.cli("agent", "list").stdout
        kube.unavailable = False
        deadline = time.monotonic() + 30
        while agent.log().count("Node attestation was successful") == attested:
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.2)
        assert agent_id in server.cli("agent", "list").stdout

        # Evicted again, now with a token the server refuses (its service account is not
        # allowed): as SPIRE's, the agent stops instead of running on without an identity.
        token_file.write_text(kube.issue_token(agent_pod, service_account="not-allowed"))
        server.cli("agent", "evict", "-spiffeID", agent_id)
        assert agent.process is not None
        assert agent.process.wait(30) == 1
        assert "the server refused to attest this agent again (PERMISSION_DENIED)" in agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
