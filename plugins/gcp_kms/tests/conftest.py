"""Fixtures for the gcp_kms tests: the fake Cloud KMS with one key ring, and a service account for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gcp_kms import FakeKms

KEY_RING = "projects/test-project/locations/us-east1/keyRings/spire"


@pytest.fixture(scope="session")
def fake_kms() -> Iterator[FakeKms]:
    fake = FakeKms()
    fake.key_rings.add(KEY_RING)
    yield fake
    fake.stop()


@pytest.fixture
def kms(fake_kms: FakeKms) -> Iterator[FakeKms]:
    yield fake_kms
    fake_kms.fail.clear()
    fake_kms.corrupt_signatures = False


@pytest.fixture
def gcp_plugin_data(kms: FakeKms, tmp_path: Path) -> dict[str, Any]:
    return {
        "key_ring": KEY_RING,
        "key_identifier_file": str(tmp_path / "server_id"),
        "service_account_file": str(kms.service_account_file(tmp_path)),
        "kms_endpoint": kms.url,
    }
