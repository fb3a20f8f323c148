"""gcp_iit under the NodeAttestor contract: both halves against Google's endpoints served on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.gcp_iit.tests.fakes import GoogleFake


class TestGcpIitContract(NodeAttestorContract):
    plugin = "gcp_iit"

    @pytest.fixture
    def server_plugin_data(self, google: GoogleFake) -> Mapping[str, Any]:
        return {"projectid_allow_list": ["project-123"], "google_certs_url": google.certs_url}

    @pytest.fixture
    def agent_plugin_data(self, google: GoogleFake) -> Mapping[str, Any]:
        return {"identity_token_host": google.host}

    @pytest.fixture
    def expected_agent_path(self, google: GoogleFake) -> str:
        return f"/gcp_iit/project-123/{google.instance.instance_id}"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {"project-id:project-123", "zone:us-west1-b", "instance-name:blog-server"}
