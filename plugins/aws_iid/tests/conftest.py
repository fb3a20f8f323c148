"""Fixtures for the aws_iid tests: moto's server for the AWS APIs and an IMDS on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.aws_iid.tests.fakes import ImdsServer, RegionSigner
from tests.support import moto

aws = moto.aws
moto_server = moto.moto_server


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
