"""The built-in disk UpstreamAuthority under the UpstreamAuthority contract."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from tests.plugin.test_upstream_disk import write_ca
from tests.support.pki import make_ca


class TestDiskUpstreamContract(UpstreamAuthorityContract):
    plugin = "disk"

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return write_ca(tmp_path, make_ca(name="upstream root", lifetime=timedelta(days=2)))


class TestDiskUpstreamUnderAnIntermediateContract(UpstreamAuthorityContract):
    """The upstream CA on disk is itself an intermediate: the chain goes through it."""

    plugin = "disk"

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        root = make_ca(name="root", lifetime=timedelta(days=3))
        return write_ca(tmp_path, make_ca(issuer=root, name="intermediate", lifetime=timedelta(days=2)), bundle=root)
