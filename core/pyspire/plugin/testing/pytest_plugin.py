"""pytest hooks and fixtures that pyspire registers for every test session."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES_ENV = "PYSPIRE_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether a missing external service fails the run instead of skipping its tests.

    CI runs set ``CI=true`` (or ``PYSPIRE_REQUIRE_SERVICES=1``): a green run there must have
    exercised every engine, so an absent database is a failure, never a silent skip.
    """
    return os.environ.get(REQUIRE_SERVICES_ENV) == "1" or os.environ.get("CI", "").lower() == "true"


def service_unavailable(reason: str) -> None:
    """Skip the current test because an external service is absent, or fail under CI.

    Tests against PostgreSQL or MariaDB call this when the server cannot be reached.
    """
    if services_required():
        pytest.fail(f"{reason} (CI=true or {REQUIRE_SERVICES_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)
