"""Fixtures for the k8s_psat tests: an HTTPS Kubernetes API server with one agent pod."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.k8s_psat.tests.fakes import FakeNode, FakePod, KubeApiServer


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    directory = tmp_path / "kube"
    directory.mkdir()
    server = KubeApiServer().start(directory)
    server.add_pod(FakePod(), FakeNode())
    yield server
    server.stop()


@pytest.fixture
def agent_pod(kube: KubeApiServer) -> FakePod:
    return kube.pods[("spire", "spire-agent-v5wgr")]
