"""Fixtures for the aws_kms tests: moto's server with the KMS behaviours moto lacks added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto import MotoServer

LAUNCHER = Path(__file__).with_name("moto_kms.py")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer(launcher=LAUNCHER)
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto, and boto3 in this process pointed at it (never at real AWS)."""
    return moto_server.use_here(monkeypatch)
