"""azure_key_vault under the KeyManager contract, against the fake Key Vault: keys survive a reload."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import PersistentKeyManagerContract

from tests.support.azure_key_vault import FakeKeyVault


class TestAzureKeyVaultContract(PersistentKeyManagerContract):
    plugin = "azure_key_vault"

    @pytest.fixture
    def plugin_data(self, vault: FakeKeyVault, tmp_path: Path) -> Mapping[str, Any]:
        return vault.plugin_data(key_identifier_file=str(tmp_path / "server_id"))

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        # The keys stay in Key Vault; the file holds the server ID that finds them again.
        return [Path(plugin_data["key_identifier_file"])]
