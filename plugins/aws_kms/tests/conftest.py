"""Fixtures for the aws_kms tests: moto's server with the KMS behaviours moto lacks added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import moto
from tests.support.moto import MotoServer

aws = moto.aws

LAUNCHER = Path(__file__).with_name("moto_kms.py")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer(launcher=LAUNCHER)
    yield server
    server.stop()
