"""The sql DataStore's node read on the event loop (``read_attested_node_at_once``), SQLite only.

The server calls it for every agent call before falling back to ``fetch_attested_node`` in a
worker thread, so what it answers is what authenticates agents: the committed state, seen at
once whoever wrote it, and no answer at all where it would have to wait.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import AttestedNode, NodeReadAtOnce
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.plugin.testing.datastore_contract import node


def _load(tmp_path: Path, **plugin_data: Any) -> DataStore:
    data = {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.sqlite3"), **plugin_data}
    handle = load_plugin("server", "DataStore", "sql", data, make_core_config(tmp_path))
    assert isinstance(handle, DataStore)
    return handle


def _read_now(store: DataStore, agent: AttestedNode) -> AttestedNode | None:
    """What the read found; it must have answered."""
    read = store.read_attested_node_at_once(agent.spiffe_id)
    assert read is not None, "the read did not answer at once"
    return read.node


def test_a_ban_made_by_another_server_is_seen_by_the_next_read(tmp_path: Path) -> None:
    this, other = _load(tmp_path), _load(tmp_path)  # two servers on one file
    agent = node("/spire/agent/x509pop/a")
    try:
        assert this.read_attested_node_at_once(agent.spiffe_id) == NodeReadAtOnce(None)
        other.create_attested_node(agent)
        assert this.read_attested_node_at_once(agent.spiffe_id) == NodeReadAtOnce(
            this.fetch_attested_node(agent.spiffe_id)
        )
        other.modify_attested_node(
            agent.spiffe_id, lambda n: replace(n, cert_serial_number="", new_cert_serial_number="")
        )
        banned = _read_now(this, agent)
        assert banned is not None
        assert banned.banned
        other.delete_attested_node(agent.spiffe_id)
        assert this.read_attested_node_at_once(agent.spiffe_id) == NodeReadAtOnce(None)
    finally:
        this.close()
        other.close()


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[DataStore, AttestedNode]]:
    """A store on ``tmp_path / "ds.sqlite3"`` holding one node."""
    store = _load(tmp_path)
    agent = node("/spire/agent/x509pop/a")
    store.create_attested_node(agent)
    yield store, agent
    store.close()


def test_a_write_in_progress_neither_blocks_the_read_nor_shows_in_it(
    stored: tuple[DataStore, AttestedNode], tmp_path: Path
) -> None:
    store, agent = stored
    writer = sqlite3.connect(tmp_path / "ds.sqlite3", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held
        writer.execute("UPDATE attested_nodes SET cert_serial_number = ''")
        before = _read_now(store, agent)
        assert before is not None
        assert before.cert_serial_number == "1"  # the uncommitted ban is not seen
        writer.execute("COMMIT")
        after = _read_now(store, agent)
        assert after is not None
        assert after.banned
    finally:
        writer.close()


def test_reads_from_another_thread_than_the_loops_are_left_to_the_worker_path(
    stored: tuple[DataStore, AttestedNode],
) -> None:
    store, agent = stored
    assert store.read_attested_node_at_once(agent.spiffe_id) is not None
    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(store.read_attested_node_at_once(agent.spiffe_id)))
    thread.start()
    thread.join()
    assert elsewhere == [None]


def test_a_file_that_cannot_be_read_answers_nothing_so_the_worker_path_reads_instead(
    stored: tuple[DataStore, AttestedNode], tmp_path: Path
) -> None:
    store, agent = stored
    (tmp_path / "ds.sqlite3").write_bytes(b"not a database any more" * 512)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"ds.sqlite3{suffix}").unlink(missing_ok=True)
    assert store.read_attested_node_at_once(agent.spiffe_id) is None  # no exception, no stale answer


def test_with_log_sql_every_read_goes_through_sqlalchemy(tmp_path: Path) -> None:
    store = _load(tmp_path, log_sql=True)
    try:
        assert store.read_attested_node_at_once(node("/spire/agent/x509pop/a").spiffe_id) is None
    finally:
        store.close()
