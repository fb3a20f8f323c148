"""Fixtures for the awssecret tests: moto's server (Secrets Manager, STS, IAM) and an upstream CA in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.awssecret.tests.upstream_ca import UpstreamSecrets, pem, put_secret
from tests.support.moto import MotoServer
from tests.support.pki import make_ca


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto, and boto3 in this process pointed at it (never at real AWS)."""
    return moto_server.use_here(monkeypatch)


@pytest.fixture
def secrets_ca(aws: MotoServer) -> UpstreamSecrets:
    root = make_ca(name="AWS secret root")
    intermediate = make_ca(name="AWS secret intermediate", issuer=root)
    certificate, key = pem(intermediate)
    return UpstreamSecrets(
        root,
        intermediate,
        put_secret("upstream-cert", certificate),
        put_secret("upstream-key", key),
        put_secret("upstream-bundle", pem(root)[0]),
    )
