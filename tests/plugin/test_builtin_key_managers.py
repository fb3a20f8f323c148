"""The built-in key managers pass the KeyManager contract, on both daemons."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import KeyManagerContract, PersistentKeyManagerContract


class TestServerMemoryKeyManager(KeyManagerContract):
    plugin = "memory"


class TestAgentMemoryKeyManager(KeyManagerContract):
    role = "agent"
    plugin = "memory"


class TestServerDiskKeyManager(PersistentKeyManagerContract):
    plugin = "disk"

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return {"keys_path": str(tmp_path / "server" / "keys.json")}

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        return [Path(plugin_data["keys_path"])]


class TestAgentDiskKeyManager(PersistentKeyManagerContract):
    role = "agent"
    plugin = "disk"

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return {"directory": str(tmp_path / "agent")}

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        return [Path(plugin_data["directory"]) / "keys.json"]
