"""The agent check's node read on SQLite, made on the event loop by a read that cannot wait.

Every agent call reads the caller's node record (SPIRE's per-call lookup). Handed to a
worker thread, that one-row read cost the server more CPU than the read itself: the
wake-ups and the interpreter lock going back and forth between the loop and the thread.
On SQLite the read is a lookup in a local file, so it is made on the loop instead, through
a connection of its own that cannot wait:

- opened read-only, with a busy timeout of zero: where SQLite would wait for a lock (in WAL
  mode readers rarely have to: a checkpoint resetting the log, a recovery), it answers
  "busy" at once and the hook answers None, so the server reads from a worker thread as
  before;
- outside SQLAlchemy's pool, so it never waits for a pooled connection;
- one statement in autocommit mode: each read sees the latest committed state, exactly as
  the worker-thread read would.

Any error closes the connection (opened again on the next read) and answers None: the
worker-thread read that follows reports what is wrong.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite

from pyspire.plugin.builtin.sql import codec
from pyspire.plugin.builtin.sql.schema import attested_nodes
from pyspire.plugin.records import NodeReadAtOnce
from pyspire.spiffe import SpiffeId

_NODE_BY_HASH = str(
    select(*codec.NODE_COLUMNS)
    .where(attested_nodes.c.spiffe_id_hash == bindparam("spiffe_id_hash"))
    .compile(dialect=sqlite.dialect(paramstyle="named"))
)


class SqliteReadsAtOnce:
    """Reads of one SQLite file that never wait, for the thread that made the first one."""

    def __init__(self, path: Path) -> None:
        """Read ``path`` (opened on the first read)."""
        self._uri = path.resolve().as_uri() + "?mode=ro"
        self._connection: sqlite3.Connection | None = None
        self._thread: int | None = None

    def attested_node(self, spiffe_id: SpiffeId) -> NodeReadAtOnce | None:
        """The node with ``spiffe_id``, or None when it cannot be read at once."""
        if self._thread is None:
            self._thread = threading.get_ident()
        elif self._thread != threading.get_ident():
            return None  # one thread's reads: the event loop's
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self._uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
            row = self._connection.execute(_NODE_BY_HASH, {"spiffe_id_hash": codec.digest(str(spiffe_id))}).fetchone()
        except sqlite3.Error:
            self.close()
            return None
        return NodeReadAtOnce(None if row is None else codec.node_from_row(row))

    def close(self) -> None:
        """Close the connection (a later read opens it again)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
