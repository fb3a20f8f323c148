"""Fixtures for the gcs_bundle tests: one fake-gcs-server for the session, a fresh bucket per test."""

from __future__ import annotations

import pytest

from plugins.gcp_cloudstorage.tests.bucket import Gcs
from tests.support import fake_gcs
from tests.support.fake_gcs import FakeGcsServer

fake_gcs_server = fake_gcs.fake_gcs_server


@pytest.fixture
def gcs(fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Gcs:
    """google-cloud-storage in this process pointed at the fake (never at Google), with a new bucket."""
    fake_gcs_server.use_here(monkeypatch)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return Gcs.with_new_bucket(fake_gcs_server)
