"""gcp_kms under the KeyManager contract, against the fake Cloud KMS: keys survive a reload of the plugin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pyspire.plugin import KeyType
from pyspire.plugin.testing import PersistentKeyManagerContract


class TestGcpKmsContract(PersistentKeyManagerContract):
    plugin = "gcp_kms"
    # RSA keys sign PKCS #1 v1.5 with SHA-256 only, as SPIRE's do (the contract also asks for
    # PSS and other hashes): test_key_manager covers RSA.
    key_types: ClassVar = (KeyType.EC_P256, KeyType.EC_P384)

    @pytest.fixture
    def plugin_data(self, gcp_plugin_data: dict[str, Any]) -> Mapping[str, Any]:
        return gcp_plugin_data

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        # The keys stay in Cloud KMS; the file holds the server ID that finds them again.
        return [Path(plugin_data["key_identifier_file"])]
