"""Fixtures for the aws_secretsmanager tests: one moto server for the session, reset for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
