"""SVIDs of ``store_svid`` entries: minted by the agent, pushed to SVIDStore plugins, never served.

As SPIRE's agent does (``pkg/agent/manager/storecache`` and ``pkg/agent/svid/store``), each
stored entry has a record whose revision moves whenever what the store holds would change: the
entry (a new revision), its SVID (minted, rotated), the agent's trust bundle, or a federated
bundle the entry federates with. A record whose revision is ahead of what the store last took
is put again, through the plugin named by the entry's selector type; a removed entry is
deleted from its store, and an entry whose selectors changed is deleted under the old ones
before it is put under the new. What fails is tried again on the next round (every
``ROUND_INTERVAL`` seconds, SPIRE's interval, or at once after a change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspire.agent.cache import IssuedSvid, WorkloadEntry
from pyspire.plugin.errors import InvalidArgument, PluginError
from pyspire.plugin.facades import SvidStore
from pyspire.spiffe import Bundle, TrustDomain, X509Svid
from pyspire.telemetry.metrics import NO_METRICS, Metrics

__all__ = ["ROUND_INTERVAL", "StoredSvids"]

_log = logging.getLogger(__name__)

ROUND_INTERVAL = 5.0


@dataclass
class _Record:
    entry: WorkloadEntry | None
    """None once the entry was removed: the store still holds its SVID until deleted."""
    svid: IssuedSvid | None = None
    revision: int = 0
    handled: int = 0
    handled_entry: WorkloadEntry | None = None


def _store_of(entry: WorkloadEntry) -> tuple[str, list[str]] | None:
    """The store's name (the selectors' one type) and the metadata (their values)."""
    types = {selector.type for selector in entry.selectors}
    if len(types) != 1:
        return None
    return types.pop(), sorted(selector.value for selector in entry.selectors)


class StoredSvids:
    """The agent's stored entries, their SVIDs, and the rounds that keep the stores current."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        stores: Sequence[SvidStore],
        availability_target: timedelta | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """Push SVIDs of ``trust_domain``'s stored entries to ``stores`` (by plugin name)."""
        self._trust_domain = trust_domain
        self._metrics = metrics
        self._stores = {store.name: store for store in stores}
        self._availability_target = availability_target
        self._records: dict[str, _Record] = {}
        self._bundle: Bundle | None = None
        self._federated: dict[TrustDomain, Bundle] = {}
        self._changed = asyncio.Event()

    # --- what the sync brings ---------------------------------------------------------

    def set_entries(self, entries: Iterable[WorkloadEntry]) -> None:
        """The stored entries now authorized for the agent."""
        new = {entry.id: entry for entry in entries}
        for entry_id, record in self._records.items():
            if entry_id not in new and record.entry is not None:
                record.handled_entry = record.handled_entry or record.entry
                record.entry, record.svid = None, None
                record.revision += 1
        for entry_id, entry in new.items():
            record = self._records.setdefault(entry_id, _Record(entry=None))
            if record.entry is None or record.entry.revision != entry.revision:
                record.revision += 1
            record.entry = entry
        self._changed.set()

    def set_bundles(self, bundle: Bundle, federated: Mapping[TrustDomain, Bundle]) -> None:
        """The agent's bundle and the federated bundles it holds."""
        own_changed = bundle != self._bundle
        changed = {td for td in set(federated) | set(self._federated) if federated.get(td) != self._federated.get(td)}
        self._bundle, self._federated = bundle, dict(federated)
        for record in self._records.values():
            if record.entry is not None and (own_changed or changed & set(record.entry.federates_with)):
                record.revision += 1
        self._changed.set()

    def federated_trust_domains(self) -> set[TrustDomain]:
        """Every trust domain a stored entry federates with."""
        return {td for r in self._records.values() if r.entry is not None for td in r.entry.federates_with}

    def entries_needing_svids(
        self, tainted_key_ids: frozenset[bytes], now: datetime | None = None
    ) -> list[WorkloadEntry]:
        """Stored entries whose SVID is missing, half-way through its life, stale or tainted."""
        now = now or datetime.now(UTC)
        needed = []
        for record in self._records.values():
            entry, svid = record.entry, record.svid
            if entry is None:
                continue
            if (
                svid is None
                or svid.due(now, self._availability_target)
                or svid.entry_revision != entry.revision
                or svid.signed_by(tainted_key_ids)
            ):
                needed.append(entry)
        return sorted(needed, key=lambda entry: entry.id)

    def put_svids(self, svids: Mapping[str, IssuedSvid]) -> None:
        """Newly minted SVIDs of stored entries (others are ignored)."""
        for entry_id, svid in svids.items():
            record = self._records.get(entry_id)
            if record is not None and record.entry is not None:
                record.svid = svid
                record.revision += 1
                self._changed.set()

    def owns(self, entry_id: str) -> bool:
        """Whether ``entry_id`` is a stored entry."""
        record = self._records.get(entry_id)
        return record is not None and record.entry is not None

    # --- the rounds -------------------------------------------------------------------

    async def run(self) -> None:
        """Process what changed, every round or at once after a change, until cancelled."""
        while True:
            self._changed.clear()
            await self.process()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=ROUND_INTERVAL)

    async def process(self) -> None:
        """One round: delete and put what is ahead of the stores (timed as SPIRE times its rounds)."""
        with self._metrics.call("store", "store_svid_updates"):
            await self._process()

    async def _process(self) -> None:
        for entry_id in sorted(self._records):
            record = self._records[entry_id]
            if record.revision <= record.handled:
                continue
            revision = record.revision
            if record.entry is None:
                if record.handled_entry is None or await self._delete(record.handled_entry):
                    del self._records[entry_id]
                continue
            if record.svid is None:
                continue  # not minted yet
            previous = record.handled_entry
            if previous is not None and previous.selectors != record.entry.selectors:
                await self._delete(previous)
            if await self._put(record.entry, record.svid):
                record.handled, record.handled_entry = revision, record.entry

    def _plugin(self, entry: WorkloadEntry, doing: str) -> tuple[SvidStore, list[str]] | None:
        store = _store_of(entry)
        if store is None:
            _log.error(
                "Invalid store name in selectors: a stored entry needs selectors of one type",
                extra={"entry_id": entry.id, "spiffe_id": str(entry.spiffe_id)},
            )
            return None
        name, metadata = store
        plugin = self._stores.get(name)
        if plugin is None:
            _log.error(
                f"Error {doing} SVID: SVIDStore not found",
                extra={"entry_id": entry.id, "spiffe_id": str(entry.spiffe_id), "svid_store": name},
            )
            return None
        return plugin, metadata

    async def _put(self, entry: WorkloadEntry, issued: IssuedSvid) -> bool:
        found = self._plugin(entry, "storing")
        if found is None or self._bundle is None:
            return False
        plugin, metadata = found
        svid = X509Svid(entry.spiffe_id, issued.chain, issued.private_key)  # type: ignore[arg-type]
        federated = {
            td: self._federated[td] for td in entry.federates_with if td != self._trust_domain and td in self._federated
        }
        try:
            await asyncio.to_thread(plugin.put_x509_svid, svid, self._bundle, federated, metadata)
        except PluginError as err:
            _log.error(
                "Failed to put X509-SVID", extra={"entry_id": entry.id, "svid_store": plugin.name, "error": str(err)}
            )
            return False
        _log.debug("SVID stored successfully", extra={"entry_id": entry.id, "svid_store": plugin.name})
        return True

    async def _delete(self, entry: WorkloadEntry) -> bool:
        found = self._plugin(entry, "deleting")
        if found is None:
            return False
        plugin, metadata = found
        try:
            await asyncio.to_thread(plugin.delete_x509_svid, metadata)
        except InvalidArgument as err:
            _log.debug(
                "Failed to delete SVID because of malformed selectors",
                extra={"entry_id": entry.id, "svid_store": plugin.name, "error": str(err)},
            )
            return True
        except PluginError as err:
            _log.error(
                "Failed to delete SVID", extra={"entry_id": entry.id, "svid_store": plugin.name, "error": str(err)}
            )
            return False
        _log.debug("SVID deleted successfully", extra={"entry_id": entry.id, "svid_store": plugin.name})
        return True
