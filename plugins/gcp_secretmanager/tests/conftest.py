"""Fixtures for the gcp_secretmanager tests: one fake Secret Manager for the session, emptied for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gcp_secret_manager import FakeSecretManager


@pytest.fixture(scope="session")
def fake_secret_manager() -> Iterator[FakeSecretManager]:
    fake = FakeSecretManager()
    yield fake
    fake.stop()


@pytest.fixture
def secret_manager(fake_secret_manager: FakeSecretManager) -> Iterator[FakeSecretManager]:
    fake_secret_manager.reset()
    yield fake_secret_manager
    fake_secret_manager.reset()


@pytest.fixture
def gsm_plugin_data(secret_manager: FakeSecretManager, tmp_path: Path) -> dict[str, Any]:
    """plugin_data reaching the fake with a service account it knows."""
    return {
        "service_account_file": str(secret_manager.service_account_file(tmp_path)),
        "secret_manager_endpoint": secret_manager.url,
    }
