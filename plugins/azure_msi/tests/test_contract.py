"""azure_msi under the NodeAttestor contract: both halves against Azure's endpoints served on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.azure_msi.tests.fakes import PRINCIPAL_ID, SUBSCRIPTION_ID, TENANT_ID, MsiFake


class TestAzureMsiContract(NodeAttestorContract):
    plugin = "azure_msi"

    @pytest.fixture
    def server_plugin_data(self, azure: MsiFake) -> Mapping[str, Any]:
        return azure.server_plugin_data()

    @pytest.fixture
    def agent_plugin_data(self, azure: MsiFake) -> Mapping[str, Any]:
        return {"imds_host": azure.imds_host}

    @pytest.fixture
    def expected_agent_path(self) -> str:
        return f"/azure_msi/{TENANT_ID}/{PRINCIPAL_ID}"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {
            f"subscription-id:{SUBSCRIPTION_ID}",
            "vm-name:frontend:blog",
            "network-security-group:frontend:webservers",
            "virtual-network:network:vnet",
            "virtual-network-subnet:network:vnet:default",
        }
