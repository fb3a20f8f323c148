"""sshpop under the NodeAttestor contract: an ssh-keygen CA, RSA host key and host certificate."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.sshpop.tests.conftest import fingerprint_of
from plugins.sshpop.tests.keygen import KeyPair


class TestSshPopContract(NodeAttestorContract):
    plugin = "sshpop"
    challenge_response = True

    @pytest.fixture
    def server_plugin_data(self, ca: KeyPair) -> Mapping[str, Any]:
        return {"cert_authorities": [ca.public_line]}

    @pytest.fixture
    def agent_plugin_data(self, host_key: KeyPair, host_cert: Path) -> Mapping[str, Any]:
        return {"host_key_path": str(host_key.path), "host_cert_path": str(host_cert)}

    @pytest.fixture
    def expected_agent_path(self, host_cert: Path) -> str:
        return f"/sshpop/{fingerprint_of(host_cert)}"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return set()
