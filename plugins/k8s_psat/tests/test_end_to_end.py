"""A real server and agent attesting with k8s_psat against the HTTPS Kubernetes API fake."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plugins.k8s_psat.tests.fakes import FakePod, KubeApiServer
from tests.server.test_api_security import attested_agent_id
from tests.support.daemons import ServerDaemon, start_agent, start_server
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


def _attest(server: ServerDaemon, cluster: str, token: str) -> str:
    """AttestAgent with the payload the agent half sends; the agent ID the server issued."""
    return attested_agent_id(server, "k8s_psat", json.dumps({"cluster": cluster, "token": token}).encode())


def test_hostile_service_account_tokens_attest_nothing_on_a_real_server(
    tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod
) -> None:
    """Reliability case 12 through the server's AttestAgent: each token the cluster does not vouch
    for, or vouches for as someone else, is refused with its status and reason and leaves no node
    record; then the genuine token of the agent's pod attests its node."""
    server = start_server(
        tmp_path / "server",
        extra="ratelimit {\n attestation = false\n }",
        plugins=(
            'NodeAttestor "k8s_psat" {\n plugin_data {\n  clusters = {\n   "prod" = {\n'
            '    service_account_allow_list = ["spire:spire-agent"]\n'
            f'    kube_config_file = "{kube.kubeconfig(tmp_path)}"\n'
            "   }\n  }\n }\n }"
        ),
    )
    replacement = FakePod(uid="00000000-0000-4000-8000-00000000beef")
    agent_id = f"spiffe://example.org/spire/agent/k8s_psat/prod/{kube.nodes['node-1'].uid}"

    def refused(cluster: str, token: str, status: Status, reason: str) -> None:
        with pytest.raises(GRPCError) as raised:
            _attest(server, cluster, token)
        error = raised.value
        assert (error.status, reason in (error.message or "")) == (status, True), (reason, error)
        assert server.cli("agent", "count").stdout.strip() == "0 attested agents", reason

    try:
        refused(
            "prod",
            "eyJforged",
            Status.PERMISSION_DENIED,
            'token not authenticated according to TokenReview API for cluster "prod": invalid bearer token',
        )
        refused(
            "prod",
            kube.issue_token(agent_pod, audiences=("vault",)),
            Status.PERMISSION_DENIED,
            'token not authenticated according to TokenReview API for cluster "prod": '
            "token audiences ['vault'] is invalid for the target audiences ['spire-server']",
        )
        refused(
            "prod",
            kube.issue_token(agent_pod, service_account="default"),
            Status.PERMISSION_DENIED,
            '"spire:default" is not an allowed service account for cluster "prod"',
        )
        # A genuine token of a cluster this server is not configured for: refused before any review.
        asked = len(kube.requests)
        refused("staging", kube.issue_token(agent_pod), Status.INVALID_ARGUMENT, 'not configured for cluster "staging"')
        assert len(kube.requests) == asked
        # The token's pod was deleted and another pod took its name.
        stale = kube.issue_token(agent_pod)
        kube.add_pod(replacement, kube.nodes["node-1"])
        refused(
            "prod",
            stale,
            Status.PERMISSION_DENIED,
            f'pod UID mismatch for pod "{agent_pod.name}" in cluster "prod": token bound to pod UID "{agent_pod.uid}"',
        )
        # ... and then deleted too.
        del kube.pods[(replacement.namespace, replacement.name)]
        refused(
            "prod",
            kube.issue_token(replacement),
            Status.PERMISSION_DENIED,
            f'pod spire/{replacement.name} no longer exists in "prod"',
        )
        assert "Traceback" not in server.log()

        kube.add_pod(replacement, kube.nodes["node-1"])
        assert _attest(server, "prod", kube.issue_token(replacement)) == agent_id
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
        assert f"agent_pod_uid:{replacement.uid}" in server.cli("agent", "show", "-spiffeID", agent_id).stdout
    finally:
        server.stop()
