"""awssecret under the UpstreamAuthority contract, with its CA (an intermediate and its root) in moto."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from plugins.awssecret.tests.upstream_ca import UpstreamSecrets


class TestAwsSecretContract(UpstreamAuthorityContract):
    plugin = "awssecret"

    @pytest.fixture
    def plugin_data(self, secrets_ca: UpstreamSecrets) -> Mapping[str, Any]:
        return secrets_ca.plugin_data()
