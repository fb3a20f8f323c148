"""k8s_psat under the NodeAttestor contract: the agent half reads a token file, the server half has it reviewed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.k8s_psat.tests.fakes import FakePod, KubeApiServer


class TestK8sPsatContract(NodeAttestorContract):
    plugin = "k8s_psat"
    replayable_evidence = (
        "a projected service account token is short-lived and bound to its pod: the API server reviews it at "
        "every attestation and the server checks that the pod still exists on its node (SPIRE's k8s_psat "
        "re-attests the same way)"
    )

    @pytest.fixture
    def server_plugin_data(self, kube: KubeApiServer, tmp_path: Path) -> Mapping[str, Any]:
        cluster = {
            "service_account_allow_list": ["spire:spire-agent"],
            "kube_config_file": str(kube.kubeconfig(tmp_path)),
        }
        return {"clusters": {"prod": cluster}}

    @pytest.fixture
    def agent_plugin_data(self, kube: KubeApiServer, agent_pod: FakePod, tmp_path: Path) -> Mapping[str, Any]:
        token = tmp_path / "token"
        token.write_text(kube.issue_token(agent_pod))
        return {"cluster": "prod", "token_path": str(token)}

    @pytest.fixture
    def expected_agent_path(self, kube: KubeApiServer) -> str:
        return f"/k8s_psat/prod/{kube.nodes['node-1'].uid}"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {"cluster:prod", "agent_ns:spire", "agent_sa:spire-agent"}
