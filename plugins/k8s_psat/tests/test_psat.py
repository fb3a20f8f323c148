"""k8s_psat loaded as the daemons load it, against an HTTPS Kubernetes API through a kubeconfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied
from pyspire.plugin.facades import AgentNodeAttestor, ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.k8s_psat.tests.fakes import FakeNode, FakePod, KubeApiServer


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("k8s_psat never challenges")


def server_attestor(tmp_path: Path, kube: KubeApiServer, **cluster: Any) -> ServerNodeAttestor:
    settings = {
        "service_account_allow_list": ["spire:spire-agent"],
        "kube_config_file": str(kube.kubeconfig(tmp_path)),
        **cluster,
    }
    handle = load_plugin(
        "server", "NodeAttestor", "k8s_psat", {"clusters": {"prod": settings}}, make_core_config(tmp_path)
    )
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def attest(handle: ServerNodeAttestor, token: str, cluster: str = "prod") -> AttestationResult:
    return handle.attest(json.dumps({"cluster": cluster, "token": token}).encode(), no_challenge)


def test_agent_sends_the_token_file_and_cluster(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOi.first\n")
    handle = load_plugin(
        "agent",
        "NodeAttestor",
        "k8s_psat",
        {"cluster": "prod", "token_path": str(token_file)},
        make_core_config(tmp_path),
    )
    assert isinstance(handle, AgentNodeAttestor)
    assert json.loads(handle.payload()) == {"cluster": "prod", "token": "eyJhbGciOi.first"}
    token_file.write_text("eyJhbGciOi.rotated")  # the kubelet rotates projected tokens
    assert json.loads(handle.payload())["token"] == "eyJhbGciOi.rotated"
    token_file.unlink()
    with pytest.raises(Internal, match="cannot read the service account token"):
        handle.payload()


def test_agent_needs_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cluster"):
        load_plugin("agent", "NodeAttestor", "k8s_psat", {}, make_core_config(tmp_path))


def test_reviewed_token_gives_node_uid_path_and_selectors(
    tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod
) -> None:
    handle = server_attestor(tmp_path, kube, allowed_node_label_keys=["pool"], allowed_pod_label_keys=["app"])
    result = attest(handle, kube.issue_token(agent_pod))
    node = kube.nodes["node-1"]
    assert result.agent_path == f"/k8s_psat/prod/{node.uid}"
    assert result.can_reattest
    assert result.selector_values == (
        "cluster:prod",
        "agent_ns:spire",
        "agent_sa:spire-agent",
        "agent_pod_name:spire-agent-v5wgr",
        f"agent_pod_uid:{agent_pod.uid}",
        "agent_node_ip:10.0.0.5",
        "agent_node_name:node-1",
        f"agent_node_uid:{node.uid}",
        "agent_node_label:pool:a",
        "agent_pod_label:app:spire-agent",
    )
    assert "POST /apis/authentication.k8s.io/v1/tokenreviews" in kube.requests


def test_pod_uid_agent_ids(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    result = attest(server_attestor(tmp_path, kube, use_pod_uid_for_agent_id=True), kube.issue_token(agent_pod))
    assert result.agent_path == f"/k8s_psat/prod/pod/{agent_pod.uid}"


def test_unauthenticated_token_is_refused(tmp_path: Path, kube: KubeApiServer) -> None:
    with pytest.raises(PermissionDenied, match=r"token not authenticated.*invalid bearer token"):
        attest(server_attestor(tmp_path, kube), "eyJforged")


def test_a_cluster_the_server_does_not_know_is_invalid_argument(
    tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod
) -> None:
    """Reliability case 12: a genuine token naming another cluster is refused before the token is
    reviewed anywhere (the fake API server is asked nothing)."""
    token = kube.issue_token(agent_pod)
    asked = len(kube.requests)
    with pytest.raises(InvalidArgument, match='not configured for cluster "staging"'):
        attest(server_attestor(tmp_path, kube), token, cluster="staging")
    assert len(kube.requests) == asked


def test_wrong_audience_is_refused(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    token = kube.issue_token(agent_pod, audiences=("vault",))
    with pytest.raises(PermissionDenied, match="is invalid for the target audiences"):
        attest(server_attestor(tmp_path, kube), token)
    # The audience is configurable per cluster.
    assert attest(server_attestor(tmp_path, kube, audience=["vault"]), token)


def test_service_account_not_allowed_is_refused(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    token = kube.issue_token(agent_pod, service_account="default")
    with pytest.raises(PermissionDenied, match='"spire:default" is not an allowed service account'):
        attest(server_attestor(tmp_path, kube), token)


def test_pod_gone_is_refused(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    token = kube.issue_token(agent_pod)
    del kube.pods[("spire", agent_pod.name)]
    with pytest.raises(PermissionDenied, match="no longer exists"):
        attest(server_attestor(tmp_path, kube), token)


def test_pod_replaced_under_the_same_name_is_refused(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    token = kube.issue_token(agent_pod)
    kube.add_pod(FakePod(uid="00000000-0000-4000-8000-00000000beef"), FakeNode())
    with pytest.raises(PermissionDenied, match="pod UID mismatch"):
        attest(server_attestor(tmp_path, kube), token)


def test_api_server_down_is_internal(tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod) -> None:
    handle = server_attestor(tmp_path, kube)
    token = kube.issue_token(agent_pod)
    kube.stop()
    with pytest.raises(Internal, match="TokenReview in cluster 'prod' failed"):
        attest(handle, token)


def test_server_credentials_refused_by_the_api_is_internal(
    tmp_path: Path, kube: KubeApiServer, agent_pod: FakePod
) -> None:
    kubeconfig = kube.kubeconfig(tmp_path, bearer="wrong")
    handle = load_plugin(
        "server",
        "NodeAttestor",
        "k8s_psat",
        {
            "clusters": {
                "prod": {"service_account_allow_list": ["spire:spire-agent"], "kube_config_file": str(kubeconfig)}
            }
        },
        make_core_config(tmp_path),
    )
    assert isinstance(handle, ServerNodeAttestor)
    with pytest.raises(Internal, match="HTTP 401"):
        attest(handle, kube.issue_token(agent_pod))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{", "not JSON"),
        (b'{"token": "x"}', "missing cluster"),
        (b'{"cluster": "prod"}', "missing token"),
        (b'{"cluster": "staging", "token": "x"}', 'not configured for cluster "staging"'),
        (b'{"cluster": "prod", "token": "' + b"x" * 70000 + b'"}', "larger than"),
    ],
)
def test_malformed_payloads(tmp_path: Path, kube: KubeApiServer, payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        server_attestor(tmp_path, kube).attest(payload, no_challenge)


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"service_account_allow_list": []}, "at least one"),
        ({"service_account_allow_list": ["spire-agent"]}, "<namespace>:<name>"),
        ({"service_account_allow_list": ["a:b"], "kube_config_file": "/nonexistent"}, "cannot load"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, cluster: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_plugin("server", "NodeAttestor", "k8s_psat", {"clusters": {"prod": cluster}}, make_core_config(tmp_path))
