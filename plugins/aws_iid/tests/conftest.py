"""Fixtures for the aws_iid tests: moto's server for the AWS APIs and an IMDS on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.aws_iid.tests.fakes import ImdsServer, RegionSigner
from tests.support.moto import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto, and boto3 in this process pointed at it (never at real AWS)."""
    return moto_server.use_here(monkeypatch)


@pytest.fixture(scope="session")
def us_west_2() -> RegionSigner:
    return RegionSigner("us-west-2")


@pytest.fixture(scope="session")
def eu_west_1() -> RegionSigner:
    return RegionSigner("eu-west-1")


@pytest.fixture
def imds() -> Iterator[ImdsServer]:
    server = ImdsServer().start()
    yield server
    server.stop()
