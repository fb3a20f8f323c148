"""http_challenge under the NodeAttestor contract: the agent half's real listener, fetched by the server half."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract


class TestHttpChallengeContract(NodeAttestorContract):
    plugin = "http_challenge"
    challenge_response = True

    @pytest.fixture
    def server_plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return {"allowed_dns_patterns": [r"^127\.0\.0\.1$"]}

    @pytest.fixture
    def agent_plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return {"hostname": "127.0.0.1"}

    @pytest.fixture
    def expected_agent_path(self) -> str:
        return "/http_challenge/127.0.0.1"

    @pytest.fixture
    def expected_selectors(self) -> set[str]:
        return {"hostname:127.0.0.1"}
