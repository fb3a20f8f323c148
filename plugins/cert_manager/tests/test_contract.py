"""cert-manager under the UpstreamAuthority contract: a CertificateRequest signed by the fake CA issuer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract


class TestCertManagerContract(UpstreamAuthorityContract):
    plugin = "cert-manager"

    @pytest.fixture
    def plugin_data(self, issuer_plugin_data: dict[str, str]) -> Mapping[str, Any]:
        return issuer_plugin_data
