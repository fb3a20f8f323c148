"""The follower: cold load equals incremental state; nothing is missed under concurrent writers."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import AttestedNode, BundleRecord, EntryFilter, Page, RegistrationEntry
from pyspire.plugin.selectors import Selector
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.cache.entries import EntryIndex
from pyspire.server.cache.follower import StateFollower
from pyspire.server.cache.nodes import NodeCache
from pyspire.spiffe import SpiffeId, TrustDomain

SERVER = SpiffeId.parse("spiffe://example.org/spire/server")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x509pop/a")


def open_store(tmp_path: Path) -> DataStore:
    handle = load_plugin(
        "server",
        "DataStore",
        "sql",
        {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.db")},
        make_core_config(tmp_path),
    )
    assert isinstance(handle, DataStore)
    return handle


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[DataStore]:
    handle = open_store(tmp_path)
    yield handle
    handle.close()


def entry(path: str, parent: SpiffeId = AGENT) -> RegistrationEntry:
    return RegistrationEntry("", SpiffeId.parse(f"spiffe://example.org{path}"), parent, (Selector("unix", "uid:1"),))


def follower(datastore: DataStore) -> tuple[StateFollower, EntryIndex, NodeCache, BundleCache]:
    entries, nodes, bundles = EntryIndex(SERVER), NodeCache(), BundleCache()
    return StateFollower(datastore, entries, nodes, bundles, poll_interval=0.05), entries, nodes, bundles


async def test_follower_applies_creates_updates_and_deletes(datastore: DataStore) -> None:
    (first,) = datastore.create_registration_entries([entry("/a")])
    state, entries, nodes, bundles = follower(datastore)
    await state.start()
    assert set(entries.authorized(AGENT, frozenset()).by_id) == {first.entry.id}
    (second,) = datastore.create_registration_entries([entry("/b")])
    datastore.delete_registration_entry(first.entry.id)
    datastore.create_attested_node(
        AttestedNode(AGENT, "x509pop", "1", 10**10, selectors=(Selector("x509pop", "ca:1"),))
    )
    datastore.set_bundle(BundleRecord(TrustDomain("example.org"), sequence_number=3))
    await state.catch_up()
    assert set(entries.authorized(AGENT, frozenset()).by_id) == {second.entry.id}
    assert nodes.selectors(AGENT) == frozenset({Selector("x509pop", "ca:1")})
    record = bundles.get(TrustDomain("example.org"))
    assert record is not None
    assert record.sequence_number == 3
    datastore.delete_attested_node(AGENT)
    await state.catch_up()
    assert nodes.get(AGENT) is None
    await state.stop()


async def test_nothing_is_missed_while_others_write_concurrently(tmp_path: Path, datastore: DataStore) -> None:
    state, entries, _, _ = follower(datastore)
    await state.start()
    other = open_store(tmp_path)  # a second "server" on the same database

    def write(prefix: str, store: DataStore) -> None:
        for number in range(40):
            store.create_registration_entries([entry(f"/{prefix}/{number}")])

    threads = [threading.Thread(target=write, args=("x", datastore)), threading.Thread(target=write, args=("y", other))]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        await asyncio.sleep(0.02)
    await state.catch_up()
    assert {e.id for e in entries.all()} == {e.id for e in datastore.list_registration_entries()[0]}
    assert len(entries) == 80
    cold, cold_entries, _, _ = follower(datastore)
    await cold.load()
    assert {e.id: e for e in cold_entries.all()} == {e.id: e for e in entries.all()}
    await state.stop()
    other.close()


async def test_datastore_outage_is_survived(tmp_path: Path, datastore: DataStore) -> None:
    state, entries, _, _ = follower(datastore)
    await state.start()
    store = datastore.instance
    engine = store.engine  # type: ignore[attr-defined]
    store._engine = None  # type: ignore[attr-defined]  # every call now fails as unavailable
    await asyncio.sleep(0.2)
    assert not state.healthy
    store._engine = engine  # type: ignore[attr-defined]
    datastore.create_registration_entries([entry("/after")])
    await state.catch_up()
    assert state.healthy
    assert len(entries) == 1
    await state.stop()


async def test_a_full_reload_wakes_those_waiting_for_the_caches(datastore: DataStore) -> None:
    """full_cache_reload_interval: the rebuilt caches hold every event, so waiters are answered."""
    entries, nodes, bundles = EntryIndex(SERVER), NodeCache(), BundleCache()
    state = StateFollower(datastore, entries, nodes, bundles, poll_interval=60, full_reload_interval=0)
    await state.start()
    (created,) = datastore.create_registration_entries([entry("/reloaded")])
    latest = datastore.last_change_sequence()
    assert await state.wait_until(latest, timeout=3)
    assert created.entry.id in entries.authorized(AGENT, frozenset()).by_id
    await state.stop()


async def test_the_cycle_collector_is_held_off_during_the_first_load_and_resumes_however_it_ends(
    tmp_path: Path, datastore: DataStore
) -> None:
    """A cold start's objects all survive: collecting them as they are made cost 40% of the load."""
    datastore.create_registration_entries([entry(f"/w/{i}") for i in range(2000)])
    collections: list[int] = []

    def heard(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(heard)
    try:
        datastore.list_registration_entries(EntryFilter(), Page())
        assert len(collections) >= 5, "reading 2,000 entries with the collector on collects again and again"
        collections.clear()
        state, entries, _, _ = follower(datastore)
        await state.start()
        await state.stop()
        assert len(collections) <= 1, "at most the one collection when the collector resumes"
        assert len(entries) == 2000
        assert gc.isenabled()

        collections.clear()
        await state.load()  # a reload, made while the server serves, leaves the collector on
        assert len(collections) >= 5

        with sqlite3.connect(tmp_path / "ds.db") as database:  # the next start fails midway
            database.execute("ALTER TABLE registered_entries RENAME TO moved_away")
        with pytest.raises(PluginError):
            await follower(datastore)[0].start()
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(heard)
