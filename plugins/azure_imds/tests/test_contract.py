"""azure_imds under the NodeAttestor contract: both halves against Azure's endpoints served on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.azure_imds.tests.fakes import SUBSCRIPTION_ID, TENANT_DOMAIN, TENANT_ID, VM_ID, AzureFake


class TestAzureImdsContract(NodeAttestorContract):
    plugin = "azure_imds"
    challenge_response = True

    @pytest.fixture
    def server_plugin_data(self, azure: AzureFake) -> Mapping[str, Any]:
        return azure.server_plugin_data()

    @pytest.fixture
    def agent_plugin_data(self, azure: AzureFake) -> Mapping[str, Any]:
        return {"tenant_domain": TENANT_DOMAIN, "imds_host": azure.imds_host}

    @pytest.fixture
    def expected_agent_path(self) -> str:
        return f"/azure_imds/{TENANT_ID}/{SUBSCRIPTION_ID}/{VM_ID}"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {
            f"subscription-id:{SUBSCRIPTION_ID}",
            "vm-name:blog",
            "vm-location:eastus",
            "resource-group:frontend",
            "network-security-group:frontend:webservers",
            "virtual-network:vnet",
            "virtual-network-subnet:vnet:default",
            "virtual-network-subnet:vnet:backend",
        }
