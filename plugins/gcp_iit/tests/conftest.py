"""Fixtures for the gcp_iit tests: Google's endpoints served on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.gcp_iit.tests.fakes import GoogleFake


@pytest.fixture
def google() -> Iterator[GoogleFake]:
    fake = GoogleFake().start()
    yield fake
    fake.stop()
