"""Fixtures for the gcp_cas tests: the fake CA Service with a pool holding a labelled subordinate of a root."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.gcp_cas import FakeAuthority, FakeCas

PROJECT = "test-project"
REGION = "us-east1"
LABEL = ("spire-upstream", "prod")


@dataclass(frozen=True)
class Authority:
    """The fake service, its pool, the labelled CA (a subordinate of ``root``), and the credentials file."""

    cas: FakeCas
    pool: str
    ca: FakeAuthority
    root: FakeAuthority
    credentials: Path

    def plugin_data(self, **spec: str | None) -> dict[str, Any]:
        """plugin_data for the labelled CA's pool; a key given as None is left out."""
        root_cert_spec = {"project_name": PROJECT, "region_name": REGION, "ca_pool": "spire",
                          "label_key": LABEL[0], "label_value": LABEL[1], **spec}  # fmt: skip
        return {"root_cert_spec": {key: value for key, value in root_cert_spec.items() if value is not None},
                "cas_endpoint": self.cas.url}  # fmt: skip


@pytest.fixture
def authority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Authority]:
    cas = FakeCas()
    credentials = cas.service_account_file(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    pool = cas.add_pool("spire")
    root = cas.add_ca(pool, "root", {}, lifetime=timedelta(days=3))
    ca = cas.add_ca(pool, "issuing", {LABEL[0]: LABEL[1]}, issuer=root)
    yield Authority(cas, pool, ca, root, credentials)
    cas.stop()
