"""Reading a SPIRE server's datastore, read-only, as SPIRE v1.13 lays it out (schema version 23).

The tables read are SPIRE's own: ``registered_entries`` with ``selectors``, ``dns_names`` and
``federated_registration_entries``; ``bundles`` (``data`` is a ``spire.common.Bundle``);
``federated_trust_domains``; ``migrations`` for the schema version. Connections are opened so
that the database cannot be written: SQLite with ``mode=ro``, PostgreSQL with
``default_transaction_read_only``, MySQL with a read-only session, and only SELECTs are sent.
The connection strings are SPIRE's (a file path; a libpq string or URL; the Go MySQL DSN).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pyspire.plugin.builtin.sql.connection import mysql_connect_args
from pyspire.plugin.records import BundleRecord, FederationRelationship, RegistrationEntry
from pyspire.plugin.selectors import Selector
from pyspire.server.migration.spire_bundle import decode_spire_bundle
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["SPIRE_SCHEMA_VERSION", "SpireDatastoreError", "SpireSnapshot", "read_spire_datastore"]

SPIRE_SCHEMA_VERSION = 23
"""The schema SPIRE v1.13 writes (pkg/server/datastore/sqlstore: latestSchemaVersion)."""

DatabaseType = Literal["sqlite3", "postgres", "mysql"]


class SpireDatastoreError(Exception):
    """The SPIRE datastore cannot be read or is not what SPIRE v1.13 writes; the message says which."""


@dataclass(frozen=True)
class SpireSnapshot:
    """What was read from SPIRE's datastore."""

    schema_version: int
    entries: tuple[RegistrationEntry, ...]
    bundles: tuple[BundleRecord, ...]
    relationships: tuple[FederationRelationship, ...]
    agents: int
    join_tokens: int


@contextmanager
def _connect(database_type: DatabaseType, connection_string: str) -> Iterator[Any]:
    if database_type == "sqlite3":
        path = connection_string.removeprefix("file:").split("?", 1)[0]
        try:
            connection: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            connection.execute("select 1 from sqlite_master")
        except sqlite3.Error as err:
            raise SpireDatastoreError(f"cannot open the SPIRE SQLite database {path} read-only: {err}") from None
    elif database_type == "postgres":
        try:
            import psycopg  # noqa: PLC0415 - optional dependency: pyspire[postgres]
        except ImportError:
            raise SpireDatastoreError('postgres needs the psycopg driver: pip install "pyspire[postgres]"') from None
        try:
            connection = psycopg.connect(
                connection_string.replace("postgres://", "postgresql://", 1),
                options="-c default_transaction_read_only=on",
            )
        except psycopg.Error as err:
            raise SpireDatastoreError(f"cannot connect to the SPIRE PostgreSQL database: {err}") from None
    else:
        try:
            import pymysql  # noqa: PLC0415 - optional dependency: pyspire[mysql]
        except ImportError:
            raise SpireDatastoreError('mysql needs the PyMySQL driver: pip install "pyspire[mysql]"') from None
        try:
            connection = pymysql.connect(**mysql_connect_args(connection_string), charset="utf8mb4")
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
        except (pymysql.Error, ValueError) as err:
            raise SpireDatastoreError(f"cannot connect to the SPIRE MySQL database: {err}") from None
    try:
        yield connection
    finally:
        connection.close()


def _rows(connection: Any, query: str) -> list[Sequence[Any]]:
    cursor = connection.cursor()
    try:
        cursor.execute(query)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _trust_domain(text: str) -> TrustDomain:
    return SpiffeId.parse(text).trust_domain if text.startswith("spiffe://") else TrustDomain.parse(text)


def _entries(connection: Any) -> tuple[RegistrationEntry, ...]:
    selectors: dict[int, list[Selector]] = defaultdict(list)
    for entry_row, kind, value in _rows(connection, "SELECT registered_entry_id, type, value FROM selectors"):
        selectors[int(entry_row)].append(Selector(str(kind), str(value)))
    dns: dict[int, list[str]] = defaultdict(list)
    for entry_row, value in _rows(connection, "SELECT registered_entry_id, value FROM dns_names ORDER BY id"):
        dns[int(entry_row)].append(str(value))
    federates: dict[int, list[TrustDomain]] = defaultdict(list)
    for entry_row, trust_domain in _rows(
        connection,
        "SELECT f.registered_entry_id, b.trust_domain FROM federated_registration_entries f "
        "JOIN bundles b ON b.id = f.bundle_id",
    ):
        federates[int(entry_row)].append(_trust_domain(str(trust_domain)))
    entries = []
    for row in _rows(
        connection,
        "SELECT id, entry_id, spiffe_id, parent_id, ttl, jwt_svid_ttl, admin, downstream, expiry, "
        "store_svid, hint FROM registered_entries ORDER BY id",
    ):
        key, entry_id, spiffe_id, parent_id, ttl, jwt_ttl, admin, downstream, expiry, store_svid, hint = row
        entries.append(
            RegistrationEntry(
                id=str(entry_id),
                spiffe_id=SpiffeId.parse(str(spiffe_id)),
                parent_id=SpiffeId.parse(str(parent_id)),
                selectors=tuple(selectors[int(key)]),
                x509_svid_ttl=int(ttl or 0),
                jwt_svid_ttl=int(jwt_ttl or 0),
                federates_with=tuple(federates[int(key)]),
                admin=bool(admin),
                downstream=bool(downstream),
                expires_at=int(expiry or 0),
                dns_names=tuple(dns[int(key)]),
                store_svid=bool(store_svid),
                hint=str(hint or ""),
            ).normalized()
        )
    return tuple(entries)


def _relationships(connection: Any) -> tuple[FederationRelationship, ...]:
    found = []
    for trust_domain, url, profile, endpoint_id in _rows(
        connection,
        "SELECT trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id "
        "FROM federated_trust_domains ORDER BY id",
    ):
        if profile not in ("https_web", "https_spiffe"):
            raise SpireDatastoreError(f"federation relationship {trust_domain}: unknown profile {profile!r}")
        found.append(
            FederationRelationship(
                trust_domain=_trust_domain(str(trust_domain)),
                bundle_endpoint_url=str(url),
                profile=profile,
                endpoint_spiffe_id=SpiffeId.parse(str(endpoint_id)) if endpoint_id else None,
            )
        )
    return tuple(found)


def _schema_version(connection: Any) -> int:
    try:
        rows = _rows(connection, "SELECT version FROM migrations ORDER BY id DESC")
    except Exception as err:  # each driver has its own "no such table"
        raise SpireDatastoreError(f"this is not a SPIRE datastore (no migrations table: {err})") from None
    if not rows:
        raise SpireDatastoreError("this is not a SPIRE datastore (its migrations table is empty)")
    return int(rows[0][0])


def read_spire_datastore(database_type: DatabaseType, connection_string: str) -> SpireSnapshot:
    """Everything the migration imports, read in one read-only transaction."""
    with _connect(database_type, connection_string) as connection:
        version = _schema_version(connection)
        if version != SPIRE_SCHEMA_VERSION:
            raise SpireDatastoreError(
                f"the SPIRE datastore has schema version {version}; pyspire reads version {SPIRE_SCHEMA_VERSION}, "
                "the one SPIRE 1.13 writes: upgrade SPIRE to 1.13 first (it migrates its datastore at start)"
            )
        try:
            bundles = tuple(
                decode_spire_bundle(bytes(data)) for (data,) in _rows(connection, "SELECT data FROM bundles")
            )
            entries = _entries(connection)
            relationships = _relationships(connection)
            agents = int(_rows(connection, "SELECT COUNT(*) FROM attested_node_entries")[0][0])
            tokens = int(_rows(connection, "SELECT COUNT(*) FROM join_tokens")[0][0])
        except (ValueError, SpiffeIdError) as err:
            raise SpireDatastoreError(f"the SPIRE datastore holds a record pyspire cannot read: {err}") from None
    return SpireSnapshot(version, entries, bundles, relationships, agents, tokens)
