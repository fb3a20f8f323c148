"""Fixtures for the vault_upstream tests: a real OpenBao server, and the Vault fake for what it cannot show."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.vault_upstream.tests.fakes import VaultServer
from plugins.vault_upstream.tests.openbao import OpenBao, Tenant


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao dev server per test process (tests share it through tenants of their own)."""
    server = OpenBao(tmp_path_factory.mktemp("openbao")).start()
    yield server
    server.stop()


@pytest.fixture
def bao(openbao: OpenBao) -> Tenant:
    """This test's PKI mount, policy and auth mounts on the OpenBao server."""
    return Tenant(openbao)


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[VaultServer]:
    """The Vault fake: for answers a real server never gives (tampered certificates) and Kubernetes auth."""
    directory = tmp_path / "vault"
    directory.mkdir()
    server = VaultServer().start(directory)
    yield server
    server.stop()
