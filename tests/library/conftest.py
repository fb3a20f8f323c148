"""The deployment the workload library's agent tests share (tests/support/identities.py), started once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspire.spiffe import X509Source

from tests.support.identities import Deployment, start_deployment


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    running = start_deployment(tmp_path_factory.mktemp("library"))
    yield running
    running.agent.stop()
    running.server.stop()


@pytest.fixture(scope="session")
def server_source(deployment: Deployment) -> Iterator[X509Source]:
    with deployment.source("server") as source:
        yield source


@pytest.fixture(scope="session")
def client_source(deployment: Deployment) -> Iterator[X509Source]:
    with deployment.source("client") as source:
        yield source


@pytest.fixture(scope="session")
def intruder_source(deployment: Deployment) -> Iterator[X509Source]:
    with deployment.source("intruder") as source:
        yield source
