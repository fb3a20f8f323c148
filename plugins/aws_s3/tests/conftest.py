"""Fixtures for the aws_s3 tests: one moto server for the session, reset for each test."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from plugins.aws_s3.tests.bucket import BUCKET, REGION
from tests.support.moto import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto with the bucket, and boto3 in this process pointed at it (never at real AWS)."""
    moto_server.use_here(monkeypatch)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    return moto_server
