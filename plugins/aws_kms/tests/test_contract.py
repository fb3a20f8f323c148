"""aws_kms under the KeyManager contract, against moto's KMS: keys survive a reload of the plugin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pyspire.plugin import KeyType
from pyspire.plugin.testing import PersistentKeyManagerContract

from tests.support.moto import MotoServer


class TestAwsKmsContract(PersistentKeyManagerContract):
    plugin = "aws_kms"
    key_types: ClassVar = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)

    @pytest.fixture
    def plugin_data(self, aws: MotoServer, tmp_path: Path) -> Mapping[str, Any]:
        return {"region": "us-west-2", "key_identifier_file": str(tmp_path / "server_id")}

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        # The keys stay in KMS; the file holds the server ID that finds them again.
        return [Path(plugin_data["key_identifier_file"])]
