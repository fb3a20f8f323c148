"""Fixtures for the aws_s3 tests: one moto server for the session, reset for each test."""

from __future__ import annotations

import boto3
import pytest

from plugins.aws_s3.tests.bucket import BUCKET, REGION
from tests.support import moto
from tests.support.moto import MotoServer

moto_server = moto.moto_server


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto with the bucket, and boto3 in this process pointed at it (never at real AWS)."""
    moto_server.use_here(monkeypatch)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    return moto_server
