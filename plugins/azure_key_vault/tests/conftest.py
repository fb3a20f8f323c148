"""Fixtures for the azure_key_vault tests: the fake Key Vault and Entra, trusted through the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.azure_key_vault import FakeKeyVault


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKeyVault]:
    fake = FakeKeyVault(tmp_path).start()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.stop()
