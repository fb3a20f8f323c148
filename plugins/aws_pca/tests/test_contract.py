"""aws_pca under the UpstreamAuthority contract, issuing through the fake ACM PCA."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from plugins.aws_pca.tests.conftest import Authority


class TestAwsPcaContract(UpstreamAuthorityContract):
    plugin = "aws_pca"

    @pytest.fixture
    def plugin_data(self, authority: Authority) -> Mapping[str, Any]:
        return authority.plugin_data()
