"""Fixtures for the azure_imds tests: IMDS, Entra and Resource Graph served on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.azure_imds.tests.fakes import AzureFake


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureFake]:
    fake = AzureFake(tmp_path).start()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.stop()
