"""Database servers for the DataStore tests: one scratch database per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import mariadb_database, postgres_database


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A libpq DSN of a fresh PostgreSQL database."""
    with postgres_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def mariadb_dsn() -> Iterator[str]:
    """A Go-style MySQL DSN of a fresh MariaDB database."""
    with mariadb_database() as dsn:
        yield dsn
