"""A server pointed at a database pyspire did not create refuses it and writes nothing.

SPIRE's schema is rebuilt here from its ``pkg/server/datastore/sqlstore/models.go`` (table
and column names as gorm derives them, schema version 25), with a few rows, on SQLite,
PostgreSQL and MariaDB. A real ``pyspire-server`` is started against it; it must exit naming
SPIRE, and every table and row must be as before (for SQLite, the file's bytes too). Where the
interop tests' SPIRE build is available (tests/support/peers.py), a database real
``spire-server`` initialised is refused the same way.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    select,
    text,
)

from tests.support import peer_builds
from tests.support.daemons import ServerDaemon, server_config
from tests.support.databases import mariadb_database, postgres_database
from tests.support.free_port import free_port


def _model(name: str, metadata: MetaData, *columns: Column[object]) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
        *columns,
    )


def spire_schema() -> MetaData:
    """SPIRE's tables (gorm names: snake_case plurals unless TableName() says otherwise)."""
    metadata = MetaData()
    _model(
        "bundles",
        metadata,
        Column("trust_domain", String(255), nullable=False, unique=True),
        Column("data", LargeBinary),
    )
    _model(
        "attested_node_entries",
        metadata,
        Column("spiffe_id", String(255), unique=True),
        Column("data_type", String(255)),
        Column("serial_number", String(255)),
        Column("expires_at", DateTime, index=True),
        Column("new_serial_number", String(255)),
        Column("new_expires_at", DateTime),
        Column("can_reattest", Boolean),
        Column("agent_version", String(255)),
    )
    _model("attested_node_entries_events", metadata, Column("spiffe_id", String(255)))
    _model(
        "node_resolver_map_entries",
        metadata,
        Column("spiffe_id", String(255)),
        Column("type", String(255)),
        Column("value", String(255)),
    )
    _model(
        "registered_entries",
        metadata,
        Column("entry_id", String(255), unique=True),
        Column("spiffe_id", String(255), index=True),
        Column("parent_id", String(255), index=True),
        Column("ttl", Integer),
        Column("admin", Boolean),
        Column("downstream", Boolean),
        Column("expiry", BigInteger, index=True),
        Column("revision_number", BigInteger),
        Column("store_svid", Boolean),
        Column("hint", String(255), index=True),
        Column("jwt_svid_ttl", Integer),
        Column("additional_attributes", LargeBinary),
    )
    _model("registered_entries_events", metadata, Column("entry_id", String(255)))
    _model("join_tokens", metadata, Column("token", String(255), unique=True), Column("expiry", BigInteger))
    _model(
        "selectors",
        metadata,
        Column("registered_entry_id", Integer),
        Column("type", String(255)),
        Column("value", String(255)),
    )
    _model("dns_names", metadata, Column("registered_entry_id", Integer), Column("value", String(255)))
    _model(
        "federated_trust_domains",
        metadata,
        Column("trust_domain", String(255), nullable=False, unique=True),
        Column("bundle_endpoint_url", String(255)),
        Column("bundle_endpoint_profile", String(255)),
        Column("endpoint_spiffe_id", String(255)),
        Column("implicit", Boolean),
    )
    _model(
        "ca_journals",
        metadata,
        Column("data", LargeBinary),
        Column("active_x509_authority_id", String(255), index=True),
        Column("active_jwt_authority_id", String(255), index=True),
    )
    _model("migrations", metadata, Column("version", Integer), Column("code_version", String(255)))
    Table(
        "federated_registration_entries",
        metadata,
        Column("bundle_id", Integer, primary_key=True),
        Column("registered_entry_id", Integer, primary_key=True),
    )
    return metadata


def populate_spire(engine: Engine) -> None:
    """SPIRE's tables with the rows a running SPIRE server has."""
    metadata = spire_schema()
    metadata.create_all(engine)
    tables = metadata.tables
    with engine.begin() as connection:
        connection.execute(tables["migrations"].insert().values(version=25, code_version="1.13.0"))
        connection.execute(tables["bundles"].insert().values(trust_domain="spiffe://example.org", data=b"\n\x13"))
        connection.execute(
            tables["registered_entries"]
            .insert()
            .values(entry_id="spire-entry", spiffe_id="spiffe://example.org/w", parent_id="spiffe://example.org/a")
        )
        connection.execute(tables["join_tokens"].insert().values(token="spire-token", expiry=2**40))
        connection.execute(tables["ca_journals"].insert().values(data=b"journal", active_x509_authority_id="x"))


def snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every table and its rows, in a stable order."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        return {
            name: sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
            for name, table in sorted(metadata.tables.items())
        }


def run_server_against(directory: Path, database_type: str, connection_string: str) -> tuple[int, str]:
    """Start a real server on the database; (exit code, log)."""
    text_, socket_path, port = server_config(directory, datastore=(database_type, connection_string))
    server = ServerDaemon("pyspire-server", directory, socket_path, text_)
    server.port = port
    server.start(wait=False)
    assert server.process is not None
    try:
        code = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"the server kept running on a foreign database:\n{server.log()}") from None
    return code, server.log()


def _sqlite(directory: Path) -> tuple[str, str, Engine]:
    path = directory / "spire" / "datastore.sqlite3"
    path.parent.mkdir(parents=True)
    return "sqlite3", str(path), create_engine(f"sqlite:///{path}")


def _postgres(dsn: str) -> tuple[str, str, Engine]:
    parts = dict(item.split("=", 1) for item in dsn.split())
    url = f"postgresql+psycopg://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    return "postgres", dsn, create_engine(url)


def _mariadb(dsn: str) -> tuple[str, str, Engine]:
    name = dsn.split(")/", 1)[1].split("?", 1)[0]
    return "mysql", dsn, create_engine(f"mysql+pymysql://root:@127.0.0.1:3306/{name}")


@pytest.fixture(params=["sqlite3", "postgres", "mysql"])
def foreign_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Engine]]:
    """(database_type, connection_string, engine) of an empty scratch database of each kind."""
    kind = request.param
    if kind == "sqlite3":
        database = _sqlite(tmp_path)
        yield database
        database[2].dispose()
        return
    scratch: Callable[[], AbstractContextManager[str]] = postgres_database if kind == "postgres" else mariadb_database
    with scratch() as dsn:
        database = _postgres(dsn) if kind == "postgres" else _mariadb(dsn)
        yield database
        database[2].dispose()


def _file_digest(connection_string: str) -> dict[str, str]:
    directory = Path(connection_string).parent
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def test_a_spire_database_is_refused_naming_spire_and_left_untouched(
    foreign_database: tuple[str, str, Engine], tmp_path: Path
) -> None:
    database_type, connection_string, engine = foreign_database
    populate_spire(engine)
    before = snapshot(engine)
    files = _file_digest(connection_string) if database_type == "sqlite3" else {}
    engine.dispose()

    code, log = run_server_against(tmp_path / "server", database_type, connection_string)

    assert code == 1, log
    assert "the database was created by SPIRE" in log, log
    assert "migrations" in log, log
    assert "Datastore schema migrated" not in log
    assert snapshot(engine) == before
    assert "alembic_version" not in inspect(engine).get_table_names()
    if database_type == "sqlite3":
        assert _file_digest(connection_string) == files


def test_a_database_holding_other_tables_is_refused_and_left_untouched(
    foreign_database: tuple[str, str, Engine], tmp_path: Path
) -> None:
    database_type, connection_string, engine = foreign_database
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(40))"))
        connection.execute(text("INSERT INTO customers VALUES (1, 'ada')"))
    before = snapshot(engine)
    engine.dispose()

    code, log = run_server_against(tmp_path / "server", database_type, connection_string)

    assert code == 1, log
    assert "the database holds tables pyspire did not create (customers)" in log, log
    assert snapshot(engine) == before


def test_a_file_that_is_not_an_sqlite_database_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for\n" * 200)
    before = path.read_bytes()

    code, log = run_server_against(tmp_path / "server", "sqlite3", str(path))

    assert code == 1, log
    assert f"{path} is not an SQLite database" in log, log
    assert path.read_bytes() == before
    assert not os.path.exists(f"{path}-wal")


def _real_spire_server() -> Path:
    """spire-server as the interop tests build it (tests/support/peers.py, from the Go module proxy)."""
    return peer_builds.require("spire").path("spire-server")


def _spire_initialises(directory: Path, database_type: str, connection_string: str) -> None:
    """Run a real spire-server on the database until it has created its schema and CA, then stop it."""
    binary = _real_spire_server()
    directory.mkdir(parents=True)
    config = directory / "server.conf"
    config.write_text(
        # A port of its own: SPIRE reads bind_port 0 as its default, 8081, which a parallel run shares.
        f'server {{\n  bind_address = "127.0.0.1"\n  bind_port = "{free_port()}"\n  socket_path = "{directory / "api.sock"}"\n'
        f'  trust_domain = "example.org"\n  data_dir = "{directory / "data"}"\n}}\n'
        f'plugins {{\n  DataStore "sql" {{\n    plugin_data {{\n      database_type = "{database_type}"\n'
        f'      connection_string = "{connection_string}"\n    }}\n  }}\n'
        '  KeyManager "memory" {\n    plugin_data {}\n  }\n  NodeAttestor "join_token" {\n    plugin_data {}\n  }\n}\n'
    )
    with (directory / "spire.log").open("wb") as log:
        process = subprocess.Popen([binary, "run", "-config", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(
            [binary, "healthcheck", "-socketPath", directory / "api.sock"], capture_output=True, check=False
        ).returncode:
            assert time.monotonic() < deadline, (directory / "spire.log").read_text()
            time.sleep(0.5)
        subprocess.run(
            [binary, "token", "generate", "-socketPath", directory / "api.sock"], capture_output=True, check=True
        )
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.needs_build("spire")
def test_a_database_real_spire_created_is_refused_and_left_untouched(
    foreign_database: tuple[str, str, Engine], tmp_path: Path
) -> None:
    database_type, connection_string, engine = foreign_database
    spire_connection = connection_string
    if database_type == "postgres":
        parts = dict(item.split("=", 1) for item in connection_string.split())
        spire_connection = f"postgresql://postgres@127.0.0.1:5432/{parts['dbname']}?sslmode=disable"
    _spire_initialises(tmp_path / "spire-server", database_type, spire_connection)
    before = snapshot(engine)
    assert "migrations" in before, before.keys()
    assert before["join_tokens"], before
    files = _file_digest(connection_string) if database_type == "sqlite3" else {}
    engine.dispose()

    code, log = run_server_against(tmp_path / "server", database_type, connection_string)

    assert code == 1, log
    assert "the database was created by SPIRE" in log, log
    assert snapshot(engine) == before
    if database_type == "sqlite3":
        assert _file_digest(connection_string) == files
