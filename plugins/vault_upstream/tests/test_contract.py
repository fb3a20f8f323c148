"""vault under the UpstreamAuthority contract, through hvac against a real OpenBao server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from plugins.vault_upstream.tests.openbao import Tenant
from plugins.vault_upstream.tests.test_vault import with_token


class TestVaultContract(UpstreamAuthorityContract):
    plugin = "vault"

    @pytest.fixture
    def plugin_data(self, bao: Tenant) -> Mapping[str, Any]:
        return with_token(bao)
