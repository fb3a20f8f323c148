"""Fixtures for the azure_msi tests: IMDS, Entra and Resource Manager served on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.azure_msi.tests.fakes import MsiFake


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MsiFake]:
    fake = MsiFake(tmp_path).start()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.stop()
