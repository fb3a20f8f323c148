"""Fixtures for the k8s_configmap tests: an HTTPS Kubernetes API server and its kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
