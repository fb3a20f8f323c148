"""Turning SPIRE's ``database_type`` + ``connection_string`` into a SQLAlchemy engine.

SPIRE's operators write Go-style connection strings; they keep working here:

- ``sqlite3``: a file path (relative to the working directory), created 0600 in a 0700
  directory if missing;
- ``postgres``: a libpq keyword string (``dbname=spire host=db user=spire``) or a
  ``postgres://`` / ``postgresql://`` URL, opened with psycopg 3;
- ``mysql``: the Go driver's DSN (``user:pass@tcp(host:3306)/spire?parseTime=true``) or a
  ``mysql://user:pass@host:3306/spire`` URL, opened with PyMySQL.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy import Engine, create_engine, event

from pyspire.files import ensure_private_dir
from pyspire.plugin.builtin.sql.ownership import refuse_foreign_tables, sqlite_tables
from pyspire.plugin.errors import PluginConfigError

__all__ = ["SqlConfig", "check_connection_settings", "make_engine", "mysql_connect_args", "postgres_dsn", "sqlite_path"]

DatabaseType = Literal["sqlite3", "postgres", "mysql"]


@dataclass(frozen=True)
class SqlConfig:
    """plugin_data of the ``sql`` DataStore (SPIRE's keys)."""

    database_type: DatabaseType
    connection_string: str
    max_open_conns: int = 100
    max_idle_conns: int = 100
    """SPIRE's default. Fewer idle connections than threads using them meant a new connection
    (and SQLite's PRAGMAs) for most reads under load."""
    conn_max_lifetime: timedelta | None = None
    disable_migration: bool = False
    log_sql: bool = False

    def __post_init__(self) -> None:
        if not self.connection_string:
            raise ValueError('key "connection_string": must not be empty')
        if self.max_open_conns < 1 or self.max_idle_conns < 0:
            raise ValueError("max_open_conns must be >= 1 and max_idle_conns >= 0")


_GO_MYSQL_DSN = re.compile(
    r"^(?:(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@)?"
    r"(?:(?P<net>[a-z]+)(?:\((?P<address>[^)]*)\))?)?"
    r"/(?P<database>[^?]*)(?:\?(?P<params>.*))?$"
)


def mysql_connect_args(dsn: str) -> dict[str, Any]:
    """PyMySQL keyword arguments from a Go MySQL DSN or a mysql:// URL."""
    if dsn.startswith("mysql://"):
        parts = urlsplit(dsn)
        args: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "database": parts.path.lstrip("/"),
        }
        return args
    match = _GO_MYSQL_DSN.match(dsn)
    if match is None or not match.group("database"):
        raise PluginConfigError(
            "connection_string", 'not a MySQL DSN: expected "user:pass@tcp(host:3306)/dbname" or a mysql:// URL'
        )
    args = {
        "user": match.group("user") or "root",
        "password": match.group("password") or "",
        "database": match.group("database"),
    }
    net, address = match.group("net") or "tcp", match.group("address") or "127.0.0.1:3306"
    if net == "unix":
        args["unix_socket"] = address
    else:
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "3306")
        args["host"] = host or "127.0.0.1"
        args["port"] = int(port or 3306)
    for key, value in parse_qsl(match.group("params") or ""):
        if key == "tls" and value not in ("false", ""):
            args["ssl"] = {}  # TLS with the system's CAs; pinned CAs are configured on the server
    return args


def _sqlite_engine(config: SqlConfig) -> Engine:
    path = sqlite_path(config)
    try:
        ensure_private_dir(path.parent if str(path.parent) else Path("."))
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Before the engine's connection set-up writes to the file (WAL), see whose it is.
        refuse_foreign_tables(sqlite_tables(path))
    except OSError as err:
        raise PluginConfigError("connection_string", f"cannot create the SQLite file {path}: {err.strerror}") from None
    # The driver's own transaction handling is off (isolation_level None); SQLAlchemy's
    # "begin" event below issues BEGIN, or BEGIN IMMEDIATE for writes, so that a
    # read-modify-write holds SQLite's write lock from its first read.
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"isolation_level": None, "timeout": 30, "check_same_thread": False},
        pool_size=max(config.max_idle_conns, 4),
        max_overflow=max(config.max_open_conns - 4, 0),
        echo=config.log_sql,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        statement = "BEGIN IMMEDIATE" if connection.info.get("write") else "BEGIN"
        if engine.echo:
            connection.exec_driver_sql(statement)  # through SQLAlchemy, so that log_sql shows it
        else:
            # Straight to the driver: SQLAlchemy's execution path cost a third of each
            # single-row read's CPU here (bench/profile_sync.py), for a statement with no result.
            connection.connection.dbapi_connection.execute(statement)

    return engine


def sqlite_path(config: SqlConfig) -> Path:
    """The SQLite file a ``database_type = "sqlite3"`` connection string names."""
    return Path(config.connection_string.removeprefix("file:").split("?", 1)[0])


def postgres_dsn(config: SqlConfig) -> str:
    """The libpq connection string of a ``database_type = "postgres"`` connection string (Go's ``postgres://`` too)."""
    return config.connection_string.replace("postgres://", "postgresql://", 1)


def check_connection_settings(config: SqlConfig) -> None:
    """What :func:`make_engine` and the first connection would refuse, found without connecting.

    The driver is installed and the connection string has its database type's form; an
    existing SQLite file is pyspire's (read-only look). Creates nothing.
    """
    if config.database_type == "sqlite3":
        path = sqlite_path(config)
        if path.is_file():
            refuse_foreign_tables(sqlite_tables(path))
        return
    if config.database_type == "postgres":
        try:
            from psycopg import conninfo  # noqa: PLC0415 - optional dependency: pyspire[postgres]
        except ImportError:
            raise PluginConfigError(
                "database_type", 'postgres needs the psycopg driver: pip install "pyspire[postgres]"'
            ) from None
        try:
            conninfo.conninfo_to_dict(postgres_dsn(config))
        except Exception as err:  # psycopg.ProgrammingError; the message says what is wrong
            raise PluginConfigError("connection_string", f"not a PostgreSQL connection string: {err}") from None
        return
    try:
        import pymysql  # noqa: F401, PLC0415 - optional dependency: pyspire[mysql]
    except ImportError:
        raise PluginConfigError(
            "database_type", 'mysql needs the PyMySQL driver: pip install "pyspire[mysql]"'
        ) from None
    mysql_connect_args(config.connection_string)


def make_engine(config: SqlConfig) -> Engine:
    """An engine for the configured database (no connection is opened yet)."""
    if config.database_type == "sqlite3":
        return _sqlite_engine(config)
    creator: Callable[[], Any]
    if config.database_type == "postgres":
        try:
            import psycopg  # noqa: PLC0415 - optional dependency: pyspire[postgres]
        except ImportError:
            raise PluginConfigError(
                "database_type", 'postgres needs the psycopg driver: pip install "pyspire[postgres]"'
            ) from None

        dsn = postgres_dsn(config)
        creator = lambda: psycopg.connect(dsn)  # noqa: E731
        url = "postgresql+psycopg://"
    else:
        try:
            import pymysql  # noqa: PLC0415 - optional dependency: pyspire[mysql]
        except ImportError:
            raise PluginConfigError(
                "database_type", 'mysql needs the PyMySQL driver: pip install "pyspire[mysql]"'
            ) from None

        args = mysql_connect_args(config.connection_string)
        creator = lambda: pymysql.connect(**args, charset="utf8mb4", autocommit=False)  # noqa: E731
        url = "mysql+pymysql://"
    lifetime = int(config.conn_max_lifetime.total_seconds()) if config.conn_max_lifetime else -1
    return create_engine(
        url,
        creator=creator,
        pool_size=max(config.max_idle_conns, 1),
        max_overflow=max(config.max_open_conns - max(config.max_idle_conns, 1), 0),
        pool_recycle=lifetime,
        pool_pre_ping=True,
        echo=config.log_sql,
        isolation_level="READ COMMITTED",
    )
