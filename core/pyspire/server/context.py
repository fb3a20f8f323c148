"""Everything a server API handler may use, built once by the daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyspire.config import ServerConfig
from pyspire.plugin.catalog import ServerCatalog
from pyspire.plugin.facades import DataStore
from pyspire.server.api.audit import AuditLog
from pyspire.server.api.ratelimit import RateLimits
from pyspire.server.ca.authority import CaManager
from pyspire.server.ca.issuer import CredentialIssuer
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.cache.entries import EntryIndex
from pyspire.server.cache.follower import StateFollower
from pyspire.server.cache.nodes import NodeCache
from pyspire.server.csr_verifier import CsrVerifier
from pyspire.server.datastore_health import DatastoreHealth
from pyspire.server.federation.refresher import BundleRefresher
from pyspire.server.server_svid import ServerSvid
from pyspire.server.work import WorkPools
from pyspire.spiffe import SpiffeId, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics

__all__ = ["ServerContext"]

T = TypeVar("T")


@dataclass
class ServerContext:
    """The server's parts, shared by all services."""

    config: ServerConfig
    catalog: ServerCatalog
    authority: CaManager
    issuer: CredentialIssuer
    entries: EntryIndex
    nodes: NodeCache
    bundles: BundleCache
    follower: StateFollower
    server_svid: ServerSvid
    datastore_health: DatastoreHealth
    rate_limits: RateLimits
    audit: AuditLog
    metrics: Metrics = NO_METRICS
    csr_verifier: CsrVerifier = field(default_factory=lambda: CsrVerifier(workers=0))
    pools: WorkPools = field(default_factory=WorkPools)
    """Threads for node attestation and for signing, apart from asyncio's default pool."""
    refresher: BundleRefresher | None = None
    """Fetches federated bundles (None until the daemon starts federation)."""
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)

    @property
    def trust_domain(self) -> TrustDomain:
        """The server's trust domain."""
        return self.config.server.trust_domain

    @property
    def server_id(self) -> SpiffeId:
        """``spiffe://<td>/spire/server``."""
        return self.config.server.server_id

    @property
    def datastore(self) -> DataStore:
        """The configured DataStore."""
        return self.catalog.datastore

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (a plugin hook, the datastore) in asyncio's default pool.

        Node attestation and signing have pools of their own (:attr:`pools`).
        """
        return await asyncio.to_thread(function, *args, **kwargs)

    async def wrote(self) -> None:
        """This server changed the datastore: bring the caches up to date before answering."""
        await self.follower.catch_up()
