"""Whose database is it? The ``sql`` DataStore creates its schema only in an empty database.

A database pyspire created carries Alembic's ``alembic_version`` table. One without it that
already holds tables belongs to someone else, and creating pyspire's tables beside them (or
writing into same-named ones: SPIRE also has ``bundles``, ``registered_entries``,
``join_tokens`` and ``ca_journals``) would corrupt it. So such a database is refused before
anything is written, naming SPIRE when the tables are SPIRE's.

SQLite files are inspected through a read-only connection before the engine opens them,
because the engine's connection set-up already writes (it switches the journal to WAL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Final

from pyspire.plugin.errors import FailedPrecondition, PluginConfigError

__all__ = ["VERSION_TABLE", "refuse_foreign_tables", "sqlite_tables"]

VERSION_TABLE: Final = "alembic_version"
"""The table that marks a database as pyspire's (Alembic's default name)."""

SPIRE_TABLES: Final = frozenset(
    {
        # SPIRE's pkg/server/datastore/sqlstore/models.go, schema versions up to 25
        "migrations",
        "bundles",
        "attested_node_entries",
        "attested_node_entries_events",
        "node_resolver_map_entries",
        "registered_entries",
        "registered_entries_events",
        "join_tokens",
        "selectors",
        "dns_names",
        "federated_trust_domains",
        "federated_registration_entries",
        "ca_journals",
    }
)
_SPIRE_ONLY: Final = SPIRE_TABLES - {"bundles", "registered_entries", "join_tokens", "ca_journals"}
_SHOWN = 5


def _listing(tables: Collection[str]) -> str:
    # SPIRE's schema-version table first: it is what says "SPIRE" to a reader.
    ordered = sorted(tables, key=lambda name: (name != "migrations", name))
    more = f", and {len(ordered) - _SHOWN} more" if len(ordered) > _SHOWN else ""
    return ", ".join(ordered[:_SHOWN]) + more


def refuse_foreign_tables(tables: Collection[str]) -> None:
    """Raise FailedPrecondition when ``tables`` (a database's tables) are not pyspire's.

    A database is pyspire's when it is empty or holds :data:`VERSION_TABLE`.
    """
    if not tables or VERSION_TABLE in tables:
        return
    spire = sorted(set(tables) & SPIRE_TABLES)
    if set(spire) & _SPIRE_ONLY:
        raise FailedPrecondition(
            f"the database was created by SPIRE (it holds SPIRE's tables {_listing(spire)}): pyspire "
            "neither reads nor writes a SPIRE datastore, and nothing was written to it; point "
            "connection_string at an empty database for pyspire"
        )
    raise FailedPrecondition(
        f"the database holds tables pyspire did not create ({_listing(tables)}): pyspire creates its "
        "schema only in an empty database, and nothing was written to it; point connection_string "
        "at an empty database for pyspire"
    )


def sqlite_tables(path: Path) -> list[str]:
    """The tables of the SQLite file ``path``, read without writing to it ([] if it is empty)."""
    if path.stat().st_size == 0:
        return []
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise PluginConfigError("connection_string", f"cannot open the SQLite file {path}: {err}") from None
    try:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    except sqlite3.DatabaseError as err:
        raise PluginConfigError("connection_string", f"{path} is not an SQLite database ({err})") from None
    finally:
        connection.close()
    return [str(name) for (name,) in rows]
