"""Fixtures for the cert-manager tests: the fake API server with a CA issuer acting on its requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.cert_manager.tests.issuer import FakeIssuer
from tests.support.kube_api import KubeApiServer


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    directory = tmp_path / "kube"
    directory.mkdir()
    server = KubeApiServer().start(directory)
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: Path) -> Path:
    return kube.kubeconfig(tmp_path / "kube")


@pytest.fixture
def issuer(kube: KubeApiServer) -> FakeIssuer:
    return FakeIssuer().attach(kube)


@pytest.fixture
def issuer_plugin_data(kubeconfig: Path, issuer: FakeIssuer) -> dict[str, str]:
    return {"issuer_name": issuer.name, "namespace": issuer.namespace, "kube_config_file": str(kubeconfig)}
