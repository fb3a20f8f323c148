"""gcp_cas under the UpstreamAuthority contract, issuing through the fake CA Service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from plugins.gcp_cas.tests.conftest import Authority


class TestGcpCasContract(UpstreamAuthorityContract):
    plugin = "gcp_cas"

    @pytest.fixture
    def plugin_data(self, authority: Authority) -> Mapping[str, Any]:
        return authority.plugin_data()
