"""The built-in sql DataStore passes the DataStore contract on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pyspire.plugin.builtin.sql.connection import SqlConfig
from pyspire.plugin.builtin.sql.schema import counters, metadata
from pyspire.plugin.builtin.sql.store import MIGRATIONS, SCHEMA_REVISION, SqlDataStore
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Unavailable
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import AttestedNode, EntryFilter, JoinToken
from pyspire.plugin.selectors import Selector
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.plugin.testing.datastore_contract import DataStoreContract, entry
from pyspire.spiffe import SpiffeId
from sqlalchemy import delete, text


def load_sql(tmp_path: Path, plugin_data: dict[str, Any]) -> DataStore:
    handle = load_plugin("server", "DataStore", "sql", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, DataStore)
    return handle


def emptied(handle: DataStore) -> DataStore:
    """The same database with every table emptied (faster than a new database per test)."""
    store = handle.instance
    assert isinstance(store, SqlDataStore)
    with store.engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(delete(table))
        connection.execute(counters.insert().values(name="change_sequence", value=0))
    return handle


class TestSqlite(DataStoreContract):
    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Iterator[DataStore]:
        handle = load_sql(
            tmp_path, {"database_type": "sqlite3", "connection_string": str(tmp_path / "data" / "ds.sqlite3")}
        )
        yield handle
        handle.close()


class TestPostgres(DataStoreContract):
    @pytest.fixture
    def datastore(self, tmp_path: Path, postgres_dsn: str) -> Iterator[DataStore]:
        handle = load_sql(tmp_path, {"database_type": "postgres", "connection_string": postgres_dsn})
        yield emptied(handle)
        handle.close()


class TestMariaDb(DataStoreContract):
    @pytest.fixture
    def datastore(self, tmp_path: Path, mariadb_dsn: str) -> Iterator[DataStore]:
        handle = load_sql(tmp_path, {"database_type": "mysql", "connection_string": mariadb_dsn})
        yield emptied(handle)
        handle.close()


def test_sqlite_file_and_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "datastore.sqlite3"
    handle = load_sql(tmp_path, {"database_type": "sqlite3", "connection_string": str(path)})
    handle.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_two_processes_worth_of_connections_share_one_sqlite_file(tmp_path: Path) -> None:
    """Two independently configured stores on one file: one join token, one winner."""
    data = {"database_type": "sqlite3", "connection_string": str(tmp_path / "shared.sqlite3")}
    first, second = load_sql(tmp_path, data), load_sql(tmp_path, data)
    first.create_join_token(JoinToken("shared", 10**10))
    results = [second.take_join_token("shared"), first.take_join_token("shared")]
    assert results.count(None) == 1
    first.close()
    second.close()


def test_database_created_by_a_newer_pyspire_is_refused(tmp_path: Path) -> None:
    data = {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.sqlite3")}
    handle = load_sql(tmp_path, data)
    store = handle.instance
    assert isinstance(store, SqlDataStore)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    handle.close()
    with pytest.raises(CatalogError, match="revision 9999, which this pyspire does not know"):
        load_sql(tmp_path, data)


def test_the_schema_revision_opened_without_alembic_is_alembics_head() -> None:
    """A new migration without SCHEMA_REVISION raised would leave databases unmigrated."""
    from alembic.config import Config  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


_OPEN_AND_REPORT_ALEMBIC = """
import sys
from pathlib import Path
from pyspire.plugin.testing import load_plugin, make_core_config
path = Path(sys.argv[1])
handle = load_plugin("server", "DataStore", "sql", {"database_type": "sqlite3", "connection_string": str(path)},
                     make_core_config(path.parent))
handle.close()
print("alembic imported" if "alembic" in sys.modules else "alembic not imported")
"""


def test_a_database_at_the_current_schema_opens_without_alembic(tmp_path: Path) -> None:
    """Each server start used to import Alembic (a tenth of a second) to find nothing to do."""
    database = tmp_path / "ds.sqlite3"

    def open_in_a_new_process() -> str:
        command = [sys.executable, "-c", _OPEN_AND_REPORT_ALEMBIC, str(database)]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    assert open_in_a_new_process() == "alembic imported"  # created: Alembic made the schema
    assert open_in_a_new_process() == "alembic not imported"
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        open_in_a_new_process()
    assert "revision 0000, which this pyspire does not know" in failed.value.stderr


def test_disable_migration_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="disable_migration is set"):
        load_sql(
            tmp_path,
            {"database_type": "sqlite3", "connection_string": str(tmp_path / "x.db"), "disable_migration": True},
        )


@pytest.mark.parametrize(
    ("plugin_data", "message"),
    [
        ({"connection_string": "x"}, 'key "database_type": is required'),
        (
            {"database_type": "oracle", "connection_string": "x"},
            'key "database_type": must be one of "sqlite3", "postgres", "mysql"',
        ),
        ({"database_type": "sqlite3", "connection_string": ""}, "connection_string"),
        ({"database_type": "mysql", "connection_string": "not a dsn"}, "not a MySQL DSN"),
        ({"database_type": "sqlite3", "connection_string": "x", "max_open_conns": 0}, "max_open_conns"),
        ({"database_type": "sqlite3", "connection_string": "x", "dialect": "y"}, 'key "dialect": unknown key'),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, plugin_data: dict[str, Any], message: str) -> None:
    os.chdir(tmp_path)
    with pytest.raises(CatalogError, match=message):
        load_sql(tmp_path, plugin_data)


def test_the_connection_pool_defaults_are_spires() -> None:
    """Regression: max_idle_conns defaulted to 2 where SPIRE's is 100, so under load most reads
    opened a new connection (and, with SQLite, ran its PRAGMAs again) and closed it after."""
    config = SqlConfig(database_type="sqlite3", connection_string="x")
    assert (config.max_open_conns, config.max_idle_conns, config.conn_max_lifetime) == (100, 100, None)


def test_unreachable_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot reach the postgres database"):
        load_sql(
            tmp_path,
            {
                "database_type": "postgres",
                "connection_string": "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=2",
            },
        )


def test_database_going_away_mid_run_is_unavailable(tmp_path: Path, postgres_dsn: str) -> None:
    handle = load_sql(tmp_path, {"database_type": "postgres", "connection_string": postgres_dsn})
    store = handle.instance
    assert isinstance(store, SqlDataStore)
    store.engine.dispose()
    # Point the pool at a port nothing listens on: every new connection fails.
    store.engine.pool._creator = lambda *a: psycopg.connect("host=127.0.0.1 port=1 user=x dbname=x connect_timeout=2")  # type: ignore[attr-defined]
    with pytest.raises(Unavailable, match="database unavailable"):
        handle.fetch_registration_entry("x")
    with pytest.raises(Unavailable):
        handle.create_join_token(JoinToken("t", 1))
    handle.close()


def test_a_started_mariadb_datastore_holds_no_migration_lock(tmp_path: Path, mariadb_dsn: str) -> None:
    """Regression: the session-level migration lock stayed on a pooled connection, so every
    later server start on the same MariaDB waited 60 s for it."""
    pymysql = pytest.importorskip("pymysql")
    first = load_sql(tmp_path / "a", {"database_type": "mysql", "connection_string": mariadb_dsn})
    try:
        database = mariadb_dsn.split("/", 1)[1].split("?", 1)[0]
        probe = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
        with probe.cursor() as cursor:
            cursor.execute("SELECT IS_USED_LOCK(%s)", (f"pyspire_migrations_{database}",))
            assert cursor.fetchone() == (None,)
        probe.close()
        started = time.monotonic()
        second = load_sql(tmp_path / "b", {"database_type": "mysql", "connection_string": mariadb_dsn})
        second.close()
        assert time.monotonic() - started < 30
    finally:
        first.close()


def test_log_sql_logs_each_statement_the_begin_included(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite's BEGIN bypasses SQLAlchemy's execution path for speed, except when log_sql asks to see it."""
    caplog.set_level("INFO", logger="sqlalchemy.engine")
    data = {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.sqlite3"), "log_sql": True}
    handle = load_sql(tmp_path, data)
    try:
        caplog.clear()
        assert handle.fetch_attested_node(SpiffeId.parse("spiffe://example.org/spire/agent/none")) is None
    finally:
        handle.close()
    statements = [record.getMessage() for record in caplog.records if record.name.startswith("sqlalchemy.engine")]
    assert "BEGIN" in statements
    assert any(statement.startswith("SELECT") for statement in statements)


def test_entries_read_with_the_same_selector_set_share_it(tmp_path: Path) -> None:
    # One workload's selectors recur under every agent that runs it: a server loading 100,000
    # entries decoded and kept each set anew (a fifth of its cold start).
    handle = load_sql(tmp_path, {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.sqlite3")})
    try:
        handle.create_registration_entries(
            [
                entry("/web", "/spire/agent/x509pop/a", "unix:uid:1000", "unix:gid:0"),
                entry("/web", "/spire/agent/x509pop/b", "unix:gid:0", "unix:uid:1000"),
                entry("/db", "/spire/agent/x509pop/b", "unix:uid:1001"),
            ]
        )
        found, _ = handle.list_registration_entries(EntryFilter())
        by_parent_and_id = {(str(e.parent_id), str(e.spiffe_id)): e for e in found}
        on_a = by_parent_and_id[("spiffe://example.org/spire/agent/x509pop/a", "spiffe://example.org/web")]
        on_b = by_parent_and_id[("spiffe://example.org/spire/agent/x509pop/b", "spiffe://example.org/web")]
        other = by_parent_and_id[("spiffe://example.org/spire/agent/x509pop/b", "spiffe://example.org/db")]
        assert on_a.selectors == (Selector("unix", "gid:0"), Selector("unix", "uid:1000"))
        assert on_b.selectors is on_a.selectors
        assert other.selectors == (Selector("unix", "uid:1001"),)
    finally:
        handle.close()


def test_the_node_read_in_autocommit_leaves_pooled_connections_transactional(tmp_path: Path, postgres_dsn: str) -> None:
    """The per-call node read skips BEGIN and ROLLBACK on PostgreSQL; the writes after it must not."""
    handle = load_sql(
        tmp_path,
        {"database_type": "postgres", "connection_string": postgres_dsn, "max_open_conns": 1, "max_idle_conns": 1},
    )
    store = handle.instance
    assert isinstance(store, SqlDataStore)
    agent = AttestedNode(
        SpiffeId.parse("spiffe://example.org/spire/agent/join_token/autocommit"), "join_token", "1", 10**10
    )
    handle.create_attested_node(agent)
    assert handle.fetch_attested_node(agent.spiffe_id) == agent
    with store.engine.connect() as connection:  # the pool's one connection, the one the read used
        assert connection.get_isolation_level() == "READ COMMITTED"
        assert connection.connection.dbapi_connection is not None
        assert connection.connection.dbapi_connection.autocommit is False
    handle.delete_attested_node(agent.spiffe_id)
    assert handle.fetch_attested_node(agent.spiffe_id) is None
    handle.close()
