"""hashicorp_vault under the KeyManager contract, against a real OpenBao server's transit engine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import PersistentKeyManagerContract

from plugins.vault_keymanager.tests.conftest import Transit


class TestHashicorpVaultContract(PersistentKeyManagerContract):
    plugin = "hashicorp_vault"

    @pytest.fixture
    def plugin_data(self, transit: Transit, tmp_path: Path) -> Mapping[str, Any]:
        return transit.plugin_data(tmp_path)

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        # The keys stay in Vault; the file holds the server ID that finds them again.
        return [Path(plugin_data["key_identifier_file"])]
