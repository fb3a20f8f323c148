"""Fixtures shared by the core test suite.

Everything the suite reads lives in the repository: the SPIFFE conformance vectors in
``tests/spiffe/vectors`` and SPIRE's own config files in ``tests/config/spire-conf`` (each folder
says where its files come from).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spire_conf_dir() -> Path:
    """SPIRE's ``server.conf``, ``agent.conf`` and their ``*_full.conf`` references."""
    return REPO / "tests" / "config" / "spire-conf"
