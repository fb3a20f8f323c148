"""The sql DataStore's node read awaited on the event loop (``read_attested_node_on_loop``), PostgreSQL only.

The server awaits it for every agent call on PostgreSQL before falling back to
``fetch_attested_node`` in a worker thread, so what it answers authenticates agents: the
committed state, whoever wrote it; and where it cannot answer soon (every connection busy,
the database silent or gone) no answer at all, so that the thread read decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from pyspire.plugin.builtin.sql import postgres_reads
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import AttestedNode, NodeReadAtOnce
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.plugin.testing.datastore_contract import node

from tests.support.databases import postgres_connections_named


def _load(tmp_path: Path, dsn: str, **plugin_data: object) -> DataStore:
    data = {"database_type": "postgres", "connection_string": dsn, **plugin_data}
    handle = load_plugin("server", "DataStore", "sql", data, make_core_config(tmp_path))
    assert isinstance(handle, DataStore)
    return handle


def _reads_connections(dsn: str, expected: int) -> int:
    return postgres_connections_named(dsn, postgres_reads.APPLICATION_NAME, expected)


@pytest.fixture
def stored(tmp_path: Path, postgres_dsn: str) -> Iterator[tuple[DataStore, AttestedNode]]:
    """A store on a fresh database holding one node."""
    store = _load(tmp_path, postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("TRUNCATE attested_nodes CASCADE")
    agent = node("/spire/agent/x509pop/a")
    store.create_attested_node(agent)
    yield store, agent
    store.close()


def test_changes_made_by_another_server_are_seen_by_the_next_read(tmp_path: Path, postgres_dsn: str) -> None:
    this, other = _load(tmp_path, postgres_dsn), _load(tmp_path, postgres_dsn)
    agent = node("/spire/agent/x509pop/changes")

    async def scenario() -> None:
        assert await this.read_attested_node_on_loop(agent.spiffe_id) == NodeReadAtOnce(None)
        other.create_attested_node(agent)
        created = await this.read_attested_node_on_loop(agent.spiffe_id)
        assert created == NodeReadAtOnce(this.fetch_attested_node(agent.spiffe_id))
        other.modify_attested_node(
            agent.spiffe_id, lambda n: replace(n, cert_serial_number="", new_cert_serial_number="")
        )
        banned = await this.read_attested_node_on_loop(agent.spiffe_id)
        assert banned is not None
        assert banned.node is not None
        assert banned.node.banned
        other.delete_attested_node(agent.spiffe_id)
        assert await this.read_attested_node_on_loop(agent.spiffe_id) == NodeReadAtOnce(None)

    try:
        asyncio.run(scenario())
    finally:
        this.close()
        other.close()


def test_with_every_connection_busy_a_read_answers_none_at_once_and_the_busy_ones_still_answer(
    stored: tuple[DataStore, AttestedNode], postgres_dsn: str
) -> None:
    store, agent = stored

    async def scenario() -> None:
        with psycopg.connect(postgres_dsn) as locker:
            # An ACCESS EXCLUSIVE lock makes every read of the table wait for it.
            locker.execute("LOCK TABLE attested_nodes IN ACCESS EXCLUSIVE MODE")
            waiting = [
                asyncio.ensure_future(store.read_attested_node_on_loop(agent.spiffe_id))
                for _ in range(postgres_reads.CONNECTIONS)
            ]
            await asyncio.sleep(0.5)
            assert not any(read.done() for read in waiting)
            started = time.monotonic()
            assert await store.read_attested_node_on_loop(agent.spiffe_id) is None
            assert time.monotonic() - started < 0.1
            locker.rollback()
        answers = await asyncio.gather(*waiting)
        assert answers == [NodeReadAtOnce(store.fetch_attested_node(agent.spiffe_id))] * postgres_reads.CONNECTIONS
        # The connections are kept for the next reads, not opened again.
        assert _reads_connections(postgres_dsn, postgres_reads.CONNECTIONS) == postgres_reads.CONNECTIONS
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None
        assert _reads_connections(postgres_dsn, postgres_reads.CONNECTIONS) == postgres_reads.CONNECTIONS

    asyncio.run(scenario())
    store.close()
    assert _reads_connections(postgres_dsn, 0) == 0


def test_a_read_past_its_deadline_answers_none_and_reads_rest_before_trying_again(
    stored: tuple[DataStore, AttestedNode], postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, agent = stored
    monkeypatch.setattr(postgres_reads, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(postgres_reads, "RETRY_AFTER", 1.0)

    async def scenario() -> None:
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None
        with psycopg.connect(postgres_dsn) as locker:
            locker.execute("LOCK TABLE attested_nodes IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert await store.read_attested_node_on_loop(agent.spiffe_id) is None
            assert 0.5 <= time.monotonic() - started < 2
            locker.rollback()
        # The connection whose statement was given up is closed, not handed to the next read.
        assert _reads_connections(postgres_dsn, 0) == 0
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is None  # resting
        await asyncio.sleep(1.1)
        assert await store.read_attested_node_on_loop(agent.spiffe_id) == NodeReadAtOnce(
            store.fetch_attested_node(agent.spiffe_id)
        )

    asyncio.run(scenario())


def test_a_connection_the_database_ended_answers_none_and_a_new_one_is_opened(
    stored: tuple[DataStore, AttestedNode], postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, agent = stored
    monkeypatch.setattr(postgres_reads, "RETRY_AFTER", 0.2)

    async def scenario() -> None:
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database()",
                (postgres_reads.APPLICATION_NAME,),
            )
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is None
        await asyncio.sleep(0.3)
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None
        assert _reads_connections(postgres_dsn, 1) == 1

    asyncio.run(scenario())


def test_reads_are_made_on_the_first_loop_only(stored: tuple[DataStore, AttestedNode]) -> None:
    store, agent = stored

    async def read() -> NodeReadAtOnce | None:
        return await store.read_attested_node_on_loop(agent.spiffe_id)

    assert asyncio.run(read()) is not None
    assert asyncio.run(read()) is None  # another loop: the first loop's connections are not its own


def test_a_call_cancelled_mid_read_closes_its_connection(
    stored: tuple[DataStore, AttestedNode], postgres_dsn: str
) -> None:
    store, agent = stored

    async def scenario() -> None:
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None
        with psycopg.connect(postgres_dsn) as locker:
            locker.execute("LOCK TABLE attested_nodes IN ACCESS EXCLUSIVE MODE")
            read = asyncio.ensure_future(store.read_attested_node_on_loop(agent.spiffe_id))
            await asyncio.sleep(0.3)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            locker.rollback()
        assert _reads_connections(postgres_dsn, 0) == 0
        assert await store.read_attested_node_on_loop(agent.spiffe_id) is not None  # no rest after a cancel

    asyncio.run(scenario())


def test_with_log_sql_every_read_goes_through_sqlalchemy(tmp_path: Path, postgres_dsn: str) -> None:
    store = _load(tmp_path, postgres_dsn, log_sql=True)
    agent = node("/spire/agent/x509pop/logged")
    try:
        store.create_attested_node(agent)
        assert asyncio.run(store.read_attested_node_on_loop(agent.spiffe_id)) is None
    finally:
        store.close()
