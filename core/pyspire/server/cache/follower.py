"""Keeps the caches current: one full load at start, then the datastore's change events.

The follower reads the newest event sequence *before* loading everything, so a change
committed during the load is replayed afterwards rather than lost. Then it polls for events
(and is woken at once by this server's own writes), re-reads each changed record and applies
it. Several servers sharing one database converge within one poll interval. If events were
pruned past the follower's position it reloads everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from pyspire.backoff import Backoff
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import AttestedNode, ChangeKind, EntryFilter, NodeFilter, Page, RegistrationEntry
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.cache.entries import EntryIndex
from pyspire.server.cache.nodes import NodeCache
from pyspire.spiffe import SpiffeId, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics

__all__ = ["StateFollower"]

_log = logging.getLogger(__name__)

PAGE = 5000
EVENT_BATCH = 5000
T = TypeVar("T")


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Hold off Python's cycle collector while the first load builds the caches.

    A load creates millions of objects that all stay alive, and none of them are cycles.
    The collector, triggered by allocations, walks every surviving object again each time the
    survivors have grown by a quarter: with 100,000 entries that made up 40% of a cold
    start's load. Objects are still freed by reference counting meanwhile, and the collector
    resumes once the load ends, however it ends.

    Only the first load, before the server serves: a reload runs while calls are served, and
    one waiting on a datastore that does not answer would leave their cyclic garbage
    uncollected for as long as it waits.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class StateFollower:
    """Loads and then follows the datastore into the entry index, node and bundle caches."""

    def __init__(
        self,
        datastore: DataStore,
        entries: EntryIndex,
        nodes: NodeCache,
        bundles: BundleCache,
        *,
        poll_interval: float = 1.0,
        metrics: Metrics = NO_METRICS,
        full_reload_interval: float = 24 * 3600.0,
    ) -> None:
        """Follow ``datastore``; ``poll_interval`` bounds how stale another server's change is.

        Every ``full_reload_interval`` seconds the caches are rebuilt from a full read, as
        SPIRE's are (``full_cache_reload_interval``): whatever reached the datastore without a
        change event (a hand-edited row) is seen then.
        """
        self._metrics = metrics
        self._datastore = datastore
        self._entries = entries
        self._nodes = nodes
        self._bundles = bundles
        self._poll_interval = poll_interval
        self._full_reload_interval = full_reload_interval
        self._loaded_at = 0.0
        self._position = 0
        self._wake = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._healthy = False
        self._confirmed_at: float | None = None
        self.last_success = 0.0

    @property
    def position(self) -> int:
        """The sequence of the last event applied."""
        return self._position

    @property
    def healthy(self) -> bool:
        """Whether the last poll reached the datastore (readiness)."""
        return self._healthy

    def confirmed_within(self, seconds: float) -> bool:
        """Whether the caches matched the datastore at most ``seconds`` ago.

        Every record in them was current as of the last poll that reached the datastore (a
        change since then would be an event that poll would have applied), so their age is the
        time since that poll, however long ago each record itself was read.
        """
        return self._confirmed_at is not None and time.monotonic() - self._confirmed_at <= seconds

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(function, *args)

    async def load(self) -> None:
        """Read the whole state (paged) into the caches (SPIRE's ``entry.cache.reload``)."""
        with self._metrics.call("entry", "cache", "reload"):
            await self._load()

    async def _load(self) -> None:
        started = time.monotonic()
        position = await self._call(self._datastore.last_change_sequence)
        entries: list[RegistrationEntry] = []
        token = ""
        while True:
            page, token = await self._call(self._datastore.list_registration_entries, EntryFilter(), Page(PAGE, token))
            entries.extend(page)
            if not token:
                break
        nodes: list[AttestedNode] = []
        token = ""
        while True:
            node_page, token = await self._call(self._datastore.list_attested_nodes, NodeFilter(), Page(PAGE, token))
            nodes.extend(node_page)
            if not token:
                break
        bundles, _ = await self._call(self._datastore.list_bundles, Page())
        self._entries.load(entries)
        self._nodes.load(nodes)
        self._bundles.load(bundles)
        self._position = position
        self._healthy = True
        self._confirmed_at = started
        self.last_success = time.time()
        self._loaded_at = time.monotonic()
        _log.info(
            "Caches loaded",
            extra={"entries": len(entries), "agents": len(nodes), "seconds": round(time.monotonic() - started, 3)},
        )
        # A reload (full_cache_reload_interval, or events pruned past this server) moves the
        # position as a poll does: whoever waits for it is answered now, not at the timeout.
        async with self._advanced:
            self._advanced.notify_all()

    async def start(self) -> None:
        """Load everything, then follow events in the background."""
        with _cycle_collection_paused():
            await self.load()
        self._task = asyncio.create_task(self._follow(), name="pyspire-state-follower")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def notify_local_write(self) -> None:
        """This server just wrote: poll now instead of at the next interval."""
        self._wake.set()

    async def wait_until(self, sequence: int, timeout: float = 5.0) -> bool:
        """Wait until events up to ``sequence`` are applied (True) or ``timeout`` passes."""
        self._wake.set()
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self._position >= sequence), timeout)
            except TimeoutError:
                return False
        return True

    async def catch_up(self) -> None:
        """Apply every event committed so far (used after this server's own writes)."""
        latest = await self._call(self._datastore.last_change_sequence)
        await self.wait_until(latest)

    async def _follow(self) -> None:
        # A datastore that does not answer is waited out: each wait longer, up to 30 s.
        backoff = Backoff(self._poll_interval * 2, multiplier=2.0, jitter=0.0, max_interval=30.0)
        delay = self._poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                if time.monotonic() - self._loaded_at >= self._full_reload_interval:
                    await self.load()
                else:
                    await self.poll()
                backoff.reset()
                delay = self._poll_interval
            except PluginError as err:
                self._healthy = False
                delay = backoff.next_wait() or 30.0
                _log.warning("Cannot follow datastore changes (retrying in %.0fs): %s", delay, err)
            except Exception:
                self._healthy = False
                delay = backoff.next_wait() or 30.0
                _log.exception("Unexpected error while following datastore changes")

    async def poll(self) -> int:
        """Apply the events committed since the last poll; returns how many."""
        started = time.monotonic()
        applied = 0
        while True:
            events = await self._call(self._datastore.list_change_events, self._position, EVENT_BATCH)
            if events and events[0].sequence != self._position + 1 and self._position > 0:
                _log.warning("Change events were pruned past this server's position: reloading everything")
                await self.load()
                return applied
            if not events:
                break
            entry_ids = {e.key for e in events if e.kind is ChangeKind.ENTRY}
            node_ids = {e.key for e in events if e.kind is ChangeKind.NODE}
            bundle_names = {e.key for e in events if e.kind is ChangeKind.BUNDLE}
            await self._refresh_entries(entry_ids)
            for node_id in node_ids:
                spiffe_id = SpiffeId.parse(node_id)
                node = await self._call(self._datastore.fetch_attested_node, spiffe_id)
                if node is None:
                    self._nodes.remove(spiffe_id)
                else:
                    self._nodes.put(node)
            for name in bundle_names:
                trust_domain = TrustDomain.parse(name)
                bundle = await self._call(self._datastore.fetch_bundle, trust_domain)
                if bundle is None:
                    self._bundles.remove(trust_domain)
                else:
                    self._bundles.put(bundle)
            self._position = events[-1].sequence
            applied += len(events)
            if len(events) < EVENT_BATCH:
                break
        self._healthy = True
        self._confirmed_at = started
        self.last_success = time.time()
        async with self._advanced:
            self._advanced.notify_all()
        return applied

    async def _refresh_entries(self, entry_ids: set[str]) -> None:
        if not entry_ids:
            return
        found = await self._call(self._datastore.fetch_registration_entries, sorted(entry_ids))
        for entry in found:
            self._entries.upsert(entry)
        for missing in entry_ids - {entry.id for entry in found}:
            self._entries.remove(missing)
