"""gcs_bundle under the Notifier contract, through google-cloud-storage against fake-gcs-server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import NotifierContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.spiffe import Bundle

from tests.support.fake_gcs import Gcs


class TestGcsBundleContract(NotifierContract):
    plugin = "gcs_bundle"
    delivers_jwt_authorities = False  # the object holds the PEM of the X.509 roots, as in SPIRE

    @pytest.fixture
    def plugin_data(self, gcs: Gcs) -> Mapping[str, Any]:
        self.gcs = gcs
        return {"bucket": gcs.bucket, "object_path": "spire-bundle.pem"}

    @pytest.fixture
    def unreachable_plugin_data(self, plugin_data: Mapping[str, Any], gcs_unreachable: None) -> Mapping[str, Any]:
        return plugin_data

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        data = self.gcs.read(plugin_data["object_path"])
        return None if data is None else Bundle.parse_x509(TEST_TRUST_DOMAIN, data)
