"""Fixtures for the gcs_bundle tests: one fake-gcs-server for the session, a fresh bucket per test."""

from __future__ import annotations

from tests.support import fake_gcs

pytest_collection_modifyitems = fake_gcs.mark_users
fake_gcs_server = fake_gcs.fake_gcs_server
gcs = fake_gcs.gcs
gcs_unreachable = fake_gcs.gcs_unreachable
token_endpoint = fake_gcs.token_endpoint
