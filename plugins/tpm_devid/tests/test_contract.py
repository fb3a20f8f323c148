"""tpm_devid under the NodeAttestor contract: a real swtpm with an EK certificate and an RSA DevID key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract
from pyspire_tpm_devid.server import fingerprint

from plugins.tpm_devid.tests.conftest import agent_data, server_data
from plugins.tpm_devid.tests.provisioning import Authority, DevId, SoftwareTpm


class TestTpmDevIdContract(NodeAttestorContract):
    plugin = "tpm_devid"
    challenge_response = True

    @pytest.fixture
    def server_plugin_data(self, ca_files: Path) -> Mapping[str, Any]:
        return server_data(ca_files)

    @pytest.fixture
    def agent_plugin_data(self, software_tpm: SoftwareTpm, devid: DevId) -> Mapping[str, Any]:
        return agent_data(software_tpm, devid)

    @pytest.fixture
    def expected_agent_path(self, devid: DevId) -> str:
        return f"/tpm_devid/{fingerprint(devid.certificate)}"

    @pytest.fixture
    def expected_selectors(self, devid_ca: Authority) -> set[str]:
        return {
            "subject:cn:node1.example.org",
            "issuer:cn:Test DevID Root CA",
            f"ca:fingerprint:{fingerprint(devid_ca.certificate)}",
        }
