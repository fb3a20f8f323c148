"""Fixtures for the aws_pca tests: the fake ACM PCA with a subordinate CA under a root, and moto for STS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from plugins.aws_pca.tests.fake_pca import REGION, FakeCa, FakePca
from tests.support import moto
from tests.support.pki import Issued, make_ca

aws = moto.aws
moto_server = moto.moto_server


@dataclass(frozen=True)
class Authority:
    """The fake service, its CA (a subordinate of ``root``), and plugin_data naming it."""

    pca: FakePca
    ca: FakeCa
    root: Issued

    def plugin_data(self, **more: str) -> dict[str, str]:
        return {"region": REGION, "certificate_authority_arn": self.ca.arn, "endpoint": self.pca.endpoint, **more}


@pytest.fixture
def authority(monkeypatch: pytest.MonkeyPatch) -> Iterator[Authority]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    root = make_ca(name="AWS PCA root")
    subordinate = make_ca(name="AWS PCA subordinate", issuer=root, path_length=1)
    pca = FakePca().start()
    yield Authority(pca, pca.add_ca(subordinate, [root.certificate]), root)
    pca.stop()
