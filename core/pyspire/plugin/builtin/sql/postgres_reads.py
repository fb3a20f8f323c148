"""The agent check's node read on PostgreSQL, awaited on the event loop through psycopg's asyncio API.

Every agent call reads the caller's node record (SPIRE's per-call lookup). Through a worker
thread and SQLAlchemy's pool that one-row read cost the server 430-585 us of CPU, against
100-120 us for the same statement awaited on the loop (bench/RESULTS.md): the thread hand-off,
the interpreter lock going back and forth and the pool's bookkeeping cost more than the read.
So on PostgreSQL the read is awaited on the loop, through connections of its own:

- at most :data:`CONNECTIONS` of them, opened when first needed and kept; a read never waits
  for one: when every one is busy, the read answers None and the server reads from a worker
  thread, as it does on every other database;
- each in autocommit: one statement that sees the latest committed state, exactly as the
  worker-thread read (also autocommit) does;
- with a deadline, :data:`READ_TIMEOUT`: a read with no answer by then is given up.

A read that fails (the connection lost, the deadline passed, the call cancelled) closes its
connection and answers None; the worker-thread read that follows reports what is wrong. After
a failure the loop's reads rest for :data:`RETRY_AFTER` seconds, so that a database that does
not answer is waited for once per agent call, by the thread read, and not twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

import psycopg
from psycopg import sql

from pyspire.plugin.builtin.sql import codec
from pyspire.plugin.builtin.sql.schema import attested_nodes
from pyspire.plugin.records import NodeReadAtOnce
from pyspire.spiffe import SpiffeId

_Cursor = psycopg.AsyncCursor[Any]

__all__ = ["APPLICATION_NAME", "CONNECTIONS", "READ_TIMEOUT", "RETRY_AFTER", "PostgresNodeReads"]

CONNECTIONS = 4
"""Connections the loop's reads keep, beside the pool's ``max_open_conns``. One read at a time
takes each about 0.2 ms on a local network, so four answer some 20,000 agent calls a second; a
burst beyond what they are reading goes to the worker threads."""

READ_TIMEOUT = 5.0
RETRY_AFTER = 5.0
APPLICATION_NAME = "pyspire-server node reads"
"""How these connections show in ``pg_stat_activity``."""

_NODE_BY_HASH = (
    sql.SQL("SELECT {columns} FROM {table} WHERE spiffe_id_hash = %(spiffe_id_hash)s")
    .format(
        columns=sql.SQL(", ").join(sql.Identifier(column.name) for column in codec.NODE_COLUMNS),
        table=sql.Identifier(attested_nodes.name),
    )
    .as_bytes(None)
)


class PostgresNodeReads:
    """Node reads of one PostgreSQL database, awaited on the first event loop that reads."""

    def __init__(self, dsn: str) -> None:
        """Read the database libpq's ``dsn`` names (connections are opened by the reads)."""
        self._dsn = dsn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Cursor] = []  # one kept per connection: making one per read cost a fifth of it
        self._opened = 0  # open or being opened, idle or not
        self._resting_until = 0.0
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread than the loop's

    def attested_node(self, spiffe_id: SpiffeId) -> Coroutine[Any, Any, NodeReadAtOnce | None] | None:
        """A read of the node with ``spiffe_id`` to await on this loop, or None when it cannot be made now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # a caller off the loop reads from its own thread
        with self._lock:
            if self._closed or time.monotonic() < self._resting_until:
                return None
            if self._loop is None:
                self._loop = loop
            elif self._loop is not loop:
                return None  # the connections belong to another loop
            cursor = self._idle.pop() if self._idle else None
            if cursor is None:
                if self._opened >= CONNECTIONS:
                    return None
                self._opened += 1
        return self._read(cursor, codec.digest(str(spiffe_id)))

    async def _read(self, cursor: _Cursor | None, spiffe_id_hash: str) -> NodeReadAtOnce | None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                if cursor is None:
                    connection = await psycopg.AsyncConnection.connect(
                        self._dsn, autocommit=True, application_name=APPLICATION_NAME
                    )
                    cursor = connection.cursor()
                await cursor.execute(_NODE_BY_HASH, {"spiffe_id_hash": spiffe_id_hash})
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError):
            self._lost(cursor, rest=True)
            return None
        except BaseException:  # cancelled mid-statement: the connection's state is unknown
            self._lost(cursor, rest=False)
            raise
        self._give_back(cursor)
        return NodeReadAtOnce(None if row is None else codec.node_from_row(row))

    def _give_back(self, cursor: _Cursor) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(cursor)
                return
            self._opened -= 1
        cursor.connection.pgconn.finish()

    def _lost(self, cursor: _Cursor | None, *, rest: bool) -> None:
        with self._lock:
            self._opened -= 1
            if rest:
                self._resting_until = time.monotonic() + RETRY_AFTER
        if cursor is not None:
            cursor.connection.pgconn.finish()

    def close(self) -> None:
        """Close the idle connections; those reading close as their reads end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
        for cursor in idle:
            cursor.connection.pgconn.finish()  # what AsyncConnection.close() does, without a loop to await it on
