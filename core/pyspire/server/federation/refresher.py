"""Keeps every federation relationship's bundle fresh, as SPIRE's bundle client does.

Relationships come from the config (``federates_with``) and from the TrustDomain API; a
trust domain in both is fetched as the config says. Each is fetched on its bundle's
``spiffe_refresh_hint`` (never more often than once a minute; every five minutes when the
bundle has no hint); a failed fetch is retried four times per hint period, and the bundle
already held stays in use meanwhile, so a partner's endpoint being down changes nothing
workloads have. A fetched bundle older than the one held (lower ``spiffe_sequence``) is
ignored. What changes is written to the datastore, from where agents deliver it to the
workloads whose entries federate with that trust domain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from cryptography import x509

from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import FederationRelationship, Page
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.federation.documents import bundle_to_record
from pyspire.server.federation.fetch import FetchError, endpoint_trust_domain, fetch_bundle
from pyspire.spiffe import Bundle, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics

__all__ = ["BundleRefresher", "UnknownRelationship"]

_log = logging.getLogger(__name__)

DEFAULT_REFRESH = timedelta(minutes=5)
MIN_REFRESH = timedelta(minutes=1)
ATTEMPTS_PER_PERIOD = 4
RECONCILE_INTERVAL = 10.0


class UnknownRelationship(LookupError):
    """No federation relationship with that trust domain."""


def refresh_interval(hint: timedelta | None) -> float:
    """Seconds from one fetch to the next for a bundle with this ``spiffe_refresh_hint``."""
    return max(hint or DEFAULT_REFRESH, MIN_REFRESH).total_seconds()


class BundleRefresher:
    """Fetches and stores federated bundles; :meth:`run` forever, :meth:`refresh` on demand."""

    def __init__(
        self,
        datastore: DataStore,
        bundles: BundleCache,
        static: Mapping[TrustDomain, FederationRelationship],
        wrote: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._metrics = metrics
        self._datastore = datastore
        self._bundles = bundles
        self._static = dict(static)
        self._wrote = wrote
        self._clock = clock
        self._next: dict[TrustDomain, float] = {}
        self._locks: dict[TrustDomain, asyncio.Lock] = {}

    async def relationships(self) -> dict[TrustDomain, FederationRelationship]:
        """Every relationship in force: the API's, overridden by the config's."""
        found: dict[TrustDomain, FederationRelationship] = {}
        token = ""
        while True:
            page, token = await asyncio.to_thread(self._datastore.list_federation_relationships, Page(500, token))
            found.update((r.trust_domain, r) for r in page)
            if not token:
                break
        found.update(self._static)
        return found

    async def run(self) -> None:
        """Refresh whatever is due, forever (the daemon cancels it)."""
        while True:
            try:
                relationships = await self.relationships()
            except Exception as err:  # a datastore hiccup: try again at the next round
                _log.warning("Cannot list federation relationships: %s", err)
                relationships = {}
            for trust_domain in set(self._next) - set(relationships):
                del self._next[trust_domain]
            now = self._clock()
            due = [r for td, r in relationships.items() if self._next.get(td, 0.0) <= now]
            if due:
                await asyncio.gather(*(self._scheduled(r) for r in due))
            upcoming = [self._next[td] - self._clock() for td in relationships if td in self._next]
            await asyncio.sleep(max(0.5, min([RECONCILE_INTERVAL, *upcoming])))

    async def refresh(self, trust_domain: TrustDomain) -> Bundle:
        """Fetch one relationship's bundle now (the RefreshBundle API); FetchError if it fails."""
        relationship = (await self.relationships()).get(trust_domain)
        if relationship is None:
            raise UnknownRelationship(f"no federation relationship with {trust_domain}")
        return await self._fetch_and_store(relationship)

    async def _scheduled(self, relationship: FederationRelationship) -> None:
        trust_domain = relationship.trust_domain
        _log.debug("Polling for bundle update", extra={"trust_domain_id": trust_domain.name})
        try:
            with self._metrics.call(
                "bundle_manager", "fetch", "federated_bundle", labels=(("trust_domain_id", trust_domain.name),)
            ):
                bundle = await self._fetch_and_store(relationship)
            self._metrics.incr_counter(
                ("bundle_manager", "update", "federated_bundle"), labels=(("trust_domain_id", trust_domain.name),)
            )
            _log.info("Bundle refreshed", extra={"trust_domain_id": trust_domain.name})
        except FetchError as err:
            held = self._bundles.get(trust_domain)
            hint = timedelta(seconds=held.refresh_hint) if held is not None and held.refresh_hint else None
            retry = refresh_interval(hint) / ATTEMPTS_PER_PERIOD
            self._next[trust_domain] = self._clock() + retry
            _log.warning(
                "Could not refresh a federated bundle; keeping the one held",
                extra={"trust_domain": str(trust_domain), "error": str(err), "retry_in_seconds": round(retry)},
            )
            return
        except Exception:
            self._next[trust_domain] = self._clock() + MIN_REFRESH.total_seconds()
            _log.exception("Refreshing the bundle of %s failed", trust_domain)
            return
        self._next[trust_domain] = self._clock() + refresh_interval(bundle.refresh_hint)

    async def _fetch_and_store(self, relationship: FederationRelationship) -> Bundle:
        trust_domain = relationship.trust_domain
        async with self._locks.setdefault(trust_domain, asyncio.Lock()):
            bundle = await asyncio.to_thread(fetch_bundle, relationship, self._endpoint_roots(relationship))
            held = self._bundles.get(trust_domain)
            if (
                held is not None
                and bundle.sequence_number is not None
                and bundle.sequence_number < held.sequence_number
            ):
                raise FetchError(
                    f"{relationship.bundle_endpoint_url} served sequence {bundle.sequence_number}, "
                    f"older than the {held.sequence_number} held"
                )
            record = bundle_to_record(bundle)
            if record != held:
                await asyncio.to_thread(self._datastore.set_bundle, record)
                await self._wrote()
                _log.info(
                    "Federated bundle updated",
                    extra={"trust_domain": str(trust_domain), "sequence": bundle.sequence_number},
                )
            return bundle

    def _endpoint_roots(self, relationship: FederationRelationship) -> list[x509.Certificate]:
        trust_domain = endpoint_trust_domain(relationship)
        held = self._bundles.get(trust_domain) if trust_domain is not None else None
        if held is None:
            return []
        return [x509.load_der_x509_certificate(authority.der) for authority in held.x509_authorities]
