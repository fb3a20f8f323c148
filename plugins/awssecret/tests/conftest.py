"""Fixtures for the awssecret tests: moto's server (Secrets Manager, STS, IAM) and an upstream CA in it."""

from __future__ import annotations

import pytest

from plugins.awssecret.tests.upstream_ca import UpstreamSecrets, pem, put_secret
from tests.support import moto
from tests.support.moto import MotoServer
from tests.support.pki import make_ca

aws = moto.aws
moto_server = moto.moto_server


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
