"""gcp_cloudstorage under the BundlePublisher contract, through google-cloud-storage against fake-gcs-server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import BundlePublisherContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.spiffe import Bundle

from tests.support.fake_gcs import Gcs


class TestGcpCloudStorageContract(BundlePublisherContract):
    plugin = "gcp_cloudstorage"

    @pytest.fixture
    def plugin_data(self, gcs: Gcs) -> Mapping[str, Any]:
        self.gcs = gcs
        return {"bucket_name": gcs.bucket, "object_name": "example.org", "format": "spiffe"}

    @pytest.fixture
    def unreachable_plugin_data(self, plugin_data: Mapping[str, Any], gcs_unreachable: None) -> Mapping[str, Any]:
        return plugin_data

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        data = self.gcs.read(plugin_data["object_name"])
        return None if data is None else Bundle.parse(TEST_TRUST_DOMAIN, data)
