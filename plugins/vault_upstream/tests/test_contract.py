"""vault under the UpstreamAuthority contract, through hvac against the HTTPS Vault fake."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from plugins.vault_upstream.tests.fakes import VaultServer
from plugins.vault_upstream.tests.test_vault import with_token


class TestVaultContract(UpstreamAuthorityContract):
    plugin = "vault"

    @pytest.fixture
    def plugin_data(self, vault: VaultServer, tmp_path: Path) -> Mapping[str, Any]:
        return with_token(vault, tmp_path)
