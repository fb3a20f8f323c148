"""aws_s3 under the BundlePublisher contract, through boto3 against moto's S3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pyspire.plugin.testing import BundlePublisherContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.spiffe import Bundle

from plugins.aws_s3.tests.bucket import BUCKET, REGION, read_object
from tests.support.free_port import free_port
from tests.support.moto import MotoServer


class TestAwsS3Contract(BundlePublisherContract):
    plugin = "aws_s3"

    @pytest.fixture
    def plugin_data(self, aws: MotoServer) -> Mapping[str, Any]:
        return {
            "region": REGION,
            "bucket": BUCKET,
            "object_key": "example.org",
            "format": "spiffe",
            "endpoint": aws.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
        }

    @pytest.fixture
    def unreachable_plugin_data(self, plugin_data: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**plugin_data, "endpoint": f"http://127.0.0.1:{free_port()}"}

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        data = read_object(plugin_data["object_key"])
        return None if data is None else Bundle.parse(TEST_TRUST_DOMAIN, data)
