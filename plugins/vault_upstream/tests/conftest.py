"""Fixtures for the vault_upstream tests: a running HTTPS Vault fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.vault_upstream.tests.fakes import VaultServer


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[VaultServer]:
    directory = tmp_path / "vault"
    directory.mkdir()
    server = VaultServer().start(directory)
    yield server
    server.stop()
