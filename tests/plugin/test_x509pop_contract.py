"""The built-in x509pop NodeAttestor under the NodeAttestor contract (both halves, challenge included)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from tests.plugin.test_x509pop import Pki, key_pem, node_certificate, pem


class TestX509PopContract(NodeAttestorContract):
    plugin = "x509pop"
    challenge_response = True

    @pytest.fixture
    def pki(self, tmp_path: Path) -> Pki:
        return Pki(tmp_path)

    @pytest.fixture
    def server_plugin_data(self, pki: Pki, tmp_path: Path) -> Mapping[str, Any]:
        return {"ca_bundle_path": str(tmp_path / "roots.pem")}

    @pytest.fixture
    def agent_plugin_data(self, pki: Pki, tmp_path: Path) -> Mapping[str, Any]:
        node = node_certificate(pki.intermediate)
        (tmp_path / "node.pem").write_bytes(pem(node.certificate, pki.intermediate.certificate))
        (tmp_path / "node.key").write_bytes(key_pem(node.key))
        return {"private_key_path": str(tmp_path / "node.key"), "certificate_path": str(tmp_path / "node.pem")}

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {"subject:cn:node-1"}
