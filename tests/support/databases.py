"""Scratch databases on the machine's PostgreSQL and MariaDB, dropped after use.

CI reuses the machine's servers, so every user creates its own uniquely named database and
drops it. When a server cannot be reached the caller skips with the reason, or fails when
CI=true (as CI sets) or PYSPIRE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pyspire.plugin.testing import service_unavailable

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}


@contextmanager
def postgres_database() -> Iterator[str]:
    """A libpq DSN of a fresh PostgreSQL database."""
    psycopg = pytest.importorskip("psycopg")
    name = f"pyspire_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(**POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        service_unavailable(f"PostgreSQL is not reachable on 127.0.0.1:5432: {err}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with psycopg.connect(**POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A Go-style MySQL DSN (as SPIRE's configs write it) of a fresh MariaDB database."""
    pymysql = pytest.importorskip("pymysql")
    name = f"pyspire_{secrets.token_hex(6)}"
    try:
        admin = pymysql.connect(**MARIADB, connect_timeout=3, autocommit=True)
    except pymysql.err.OperationalError as err:
        service_unavailable(f"MariaDB is not reachable on 127.0.0.1:3306: {err}")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.close()
    try:
        yield f"root:@tcp(127.0.0.1:3306)/{name}?parseTime=true"
    finally:
        admin = pymysql.connect(**MARIADB, autocommit=True)
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def postgres_connections_named(dsn: str, application_name: str, expected: int) -> int:
    """How many connections ``application_name`` has open on ``dsn``'s database, once they number ``expected`` or after 5 s.

    A backend leaves ``pg_stat_activity`` a moment after its client closed the connection.
    """
    import psycopg  # noqa: PLC0415 - skipped with the reason by postgres_database() when absent

    deadline = time.monotonic() + 5
    with psycopg.connect(dsn, autocommit=True) as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                (application_name,),
            ).fetchone()
            assert row is not None
            if row[0] == expected or time.monotonic() > deadline:
                return int(row[0])
            time.sleep(0.05)
