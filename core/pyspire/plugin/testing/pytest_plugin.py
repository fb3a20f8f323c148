"""pytest hooks and fixtures that pyspire registers for every test session."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES_ENV = "PYSPIRE_REQUIRE_SERVICES"


def service_unavailable(reason: str) -> None:
    """Skip the current test because an external service is absent, or fail under CI.

    Tests against PostgreSQL or MariaDB call this when the server cannot be reached. CI sets
    ``PYSPIRE_REQUIRE_SERVICES=1`` so that a missing database is a failure there, never a
    silently skipped (and so untested) engine.
    """
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)
