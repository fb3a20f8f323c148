"""Fixtures shared by the core test suite.

The SPIFFE conformance vectors live outside the repository, in ``../shared`` (or wherever
``PYSPIRE_SHARED`` points). Locally a missing copy skips the conformance tests; under CI
(``CI=true``) it is an error, because a green run without the vectors would prove nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path | None:
    configured = os.environ.get("PYSPIRE_SHARED")
    candidate = Path(configured) if configured else REPO.parent / "shared"
    return candidate if (candidate / "spiffe" / "vectors").is_dir() else None


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI", "").lower() == "true" and _shared_dir() is None:
        raise pytest.UsageError(
            "CI=true but the shared SPIFFE vectors were not found: expected "
            "../shared/spiffe/vectors next to the checkout, or PYSPIRE_SHARED pointing at "
            "the shared directory"
        )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared directory (SPIFFE specs, vectors, SPIRE's config files)."""
    found = _shared_dir()
    if found is None:
        pytest.skip("../shared not found (set PYSPIRE_SHARED); conformance vectors unavailable")
    return found


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    """``shared/spiffe/vectors``: the conformance vectors and fixtures."""
    return shared_dir / "spiffe" / "vectors"
