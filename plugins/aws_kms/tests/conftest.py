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
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoServer:
    """A clean moto, and boto3 in this process pointed at it (never at real AWS)."""
    moto_server.reset()
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server
