"""The agent's work loop: renew its own SVID, sync entries and bundles, mint workload SVIDs.

Every ``sync_interval`` (or at once when a new workload matched entries without SVIDs) the
agent fetches the bundle (and the federated bundles its entries need), syncs its authorized
entries, and asks for X509-SVIDs in batches for the entries that need one (new, half-way
through their life, changed, or signed by a tainted authority). The agent SVID is renewed
at half-life with ±10% jitter so that a fleet does not renew in step, and at once when its
authority is tainted.

When the server is unreachable the loop backs off exponentially (to ``MAX_BACKOFF``) and
workloads keep the SVIDs they have until those expire. When the server says the agent is
banned the saved SVID is deleted and the agent stops; when it says the agent is no longer
attested (evicted) a re-attestable agent attests again and any other stops with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire import spire_ids
from pyspire.agent.cache import IssuedSvid, WorkloadCache, WorkloadEntry, issued_by_any
from pyspire.agent.client import RateLimited, ServerClient, ServerUnavailable, UnusableAnswer
from pyspire.agent.node import NodeError, NodeIdentityManager
from pyspire.agent.svid_store import StoredSvids
from pyspire.backoff import Backoff, transient_status
from pyspire.plugin.errors import PluginError
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import Bundle, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import start_span

__all__ = ["MAX_BACKOFF", "SVID_BATCH", "AgentStopped", "SyncManager"]

_log = logging.getLogger(__name__)

SVID_BATCH = 250
"""X509-SVID requests per BatchNewX509SVID call: half of SPIRE's per-address signing budget of
500 per second, so consecutive batches are paced by the server's limiter rather than refused."""
RATE_LIMIT_RETRIES = 10
MAX_BACKOFF = 60.0
"""Longest wait between attempts while the server is unreachable (seconds)."""
_REASONS = types_pb2.PermissionDeniedDetails.Reason
_REATTEST_REASONS = (
    _REASONS.AGENT_NOT_ATTESTED,  # evicted
    _REASONS.AGENT_EXPIRED,
    _REASONS.AGENT_NOT_ACTIVE,  # presenting an SVID the server has replaced
    _REASONS.AGENT_MUST_REATTEST,  # re-attestable nodes renew by attesting again
)


class AgentStopped(Exception):
    """The agent cannot go on (banned, evicted without re-attestation); the message says why."""


def _denied_reason(err: GRPCError) -> int | None:
    if err.status is not Status.PERMISSION_DENIED:
        return None
    for detail in err.details or ():
        if isinstance(detail, types_pb2.PermissionDeniedDetails):
            return int(detail.reason)
    return None


def _new_key(key_type: str) -> PrivateKeyTypes:
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return ec.generate_private_key(ec.SECP256R1())


def _workload_csr(private_key: PrivateKeyTypes) -> bytes:
    # The server takes only the public key from the CSR; the entry decides everything else.
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(private_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


class SyncManager:
    """Keeps the cache and the agent SVID current."""

    def __init__(
        self,
        node: NodeIdentityManager,
        client: ServerClient,
        cache: WorkloadCache,
        *,
        sync_interval: float,
        workload_key_type: str = "ec-p256",
        metrics: Metrics = NO_METRICS,
        use_sync_authorized_entries: bool = True,
        stored: StoredSvids | None = None,
    ) -> None:
        """Work for ``node`` through ``client``, into ``cache``.

        ``use_sync_authorized_entries`` (SPIRE's experimental key, default true) syncs with
        SyncAuthorizedEntries, which sends only the entries whose revision changed; false
        fetches every entry with GetAuthorizedEntries on each sync, as older SPIRE agents do.
        Entries with ``store_svid`` go to ``stored`` (the SVIDStore plugins), never to ``cache``.
        """
        self._metrics = metrics
        self._node = node
        self._client = client
        self.cache = cache
        self._interval = sync_interval
        self._key_type = workload_key_type
        self._use_sync = use_sync_authorized_entries
        self._stored = stored or StoredSvids(cache.trust_domain, ())
        self._renew_at: datetime | None = None
        self._synced: dict[str, WorkloadEntry] = {}
        """Every authorized entry of the last sync (node aliases too), to diff the next one by revision."""
        self.last_success: datetime | None = None
        self.synced = asyncio.Event()
        """Set after the first complete sync (readiness)."""

    # --- the agent SVID --------------------------------------------------------------

    def _schedule_renewal(self) -> None:
        identity = self._node.identity
        if identity is None:
            return
        lifetime = identity.not_after - identity.not_before
        jitter = random.uniform(-0.1, 0.1) * lifetime / 2  # noqa: S311 - spreading load, not secrecy
        self._renew_at = identity.not_before + lifetime / 2 + jitter

    async def _renew_if_due(self) -> None:
        if self._renew_at is None:
            self._schedule_renewal()
        identity = self._node.identity
        if identity is None or self._renew_at is None:
            return
        # As SPIRE: an agent SVID signed by a tainted authority is renewed at once, before that
        # authority is revoked and the server stops trusting it.
        tainted = issued_by_any(identity.chain, self.cache.tainted_key_ids)
        if tainted:
            _log.info("The agent SVID was signed by a tainted authority: renewing it")
        now = datetime.now(UTC)
        if tainted or now >= self._renew_at:
            # As SPIRE: a node that can re-attest renews by attesting again (fresh evidence).
            try:
                if identity.reattestable:
                    await self._node.attest(reattest=True)
                else:
                    await self._node.renew()
            except PluginError as err:
                # The KeyManager could not store the new key (a full disk, say): the SVID in
                # hand is still valid, so renewal is tried again at the next sync.
                _log.error("Cannot renew the agent SVID; trying again at the next sync", extra={"error": str(err)})
                return
            except (ServerUnavailable, GRPCError) as err:
                if isinstance(err, GRPCError) and err.status is Status.PERMISSION_DENIED:
                    raise  # banned, evicted: the server's reason decides
                if now >= identity.not_after and not identity.reattestable:
                    # As SPIRE's rotator: an expired SVID that could not be renewed is the end
                    # for a node that cannot attest again; the server's handshake refuses it,
                    # so retrying would only hide why the agent serves no new identities.
                    reason = err.message if isinstance(err, GRPCError) else str(err)
                    raise AgentStopped(
                        f"the agent SVID expired at {identity.not_after.isoformat()} and could not be renewed "
                        f"({reason}); its attestor cannot re-attest: restart the agent with new attestation "
                        "data (for join_token, a new token)"
                    ) from None
                raise
            self._schedule_renewal()

    def _retry_wait(self, backoff: Backoff) -> float:
        """The backoff's next wait, cut short to just past the agent SVID's expiry if that comes first.

        An agent that cannot re-attest must stop when its SVID lapses unrenewed, not a backoff
        of up to a minute later; one that can attests again as soon as it may.
        """
        wait = backoff.next_wait() or MAX_BACKOFF
        identity = self._node.identity
        if identity is not None:
            left = (identity.not_after - datetime.now(UTC)).total_seconds()
            if left > 0:
                wait = min(wait, left + 0.5)
        return wait

    async def _handle_denied(self, err: GRPCError) -> None:
        reason = _denied_reason(err)
        if reason == _REASONS.AGENT_BANNED:
            self._node.forget()
            raise AgentStopped("this agent is banned by the server: its SVID was deleted; stopping") from None
        if reason in _REATTEST_REASONS:
            identity = self._node.identity
            if identity is not None and identity.reattestable:
                _log.info("The server asks this agent to attest again", extra={"reason": err.message})
                try:
                    await self._node.attest(reattest=True)
                except GRPCError as refusal:
                    if transient_status(refusal.status.value):
                        raise  # tried again at the next sync
                    # As SPIRE: an agent the server will not attest again stops, it does not linger.
                    self._node.forget()
                    raise AgentStopped(
                        f"the server refused to attest this agent again ({refusal.status.name}): {refusal.message}"
                    ) from None
                self._schedule_renewal()
                return
            self._node.forget()
            raise AgentStopped(
                f"the server refused this agent ({err.message}) and its attestor cannot re-attest: "
                "restart the agent with new attestation data (for join_token, a new token)"
            ) from None
        raise err

    # --- one sync --------------------------------------------------------------------

    async def sync_once(self) -> None:
        """One full round; raises ServerUnavailable or AgentStopped."""
        with start_span("agent.sync"):
            await self._sync_once()

    async def _sync_once(self) -> None:
        try:
            await self._renew_if_due()
            with (
                self._metrics.call("manager", "sync", "fetch_entries_updates"),
                start_span("agent.fetch_entries_updates"),
            ):
                await self._sync_bundles()
                await self._sync_entries()
            await self._mint_svids()
        except GRPCError as err:
            if err.status is Status.PERMISSION_DENIED:
                await self._handle_denied(err)
                return
            raise
        except NodeError as err:
            raise AgentStopped(str(err)) from None
        self.last_success = datetime.now(UTC)
        self.synced.set()

    async def _sync_bundles(self) -> None:
        bundle, tainted, tainted_jwt = await self._client.bundle()
        self._node.set_roots(bundle.x509_authorities)
        federated: dict[TrustDomain, Bundle] = {}
        for trust_domain in sorted(self._federated_trust_domains(), key=str):
            try:
                federated_bundle = await self._client.federated_bundle(trust_domain.name)
            except UnusableAnswer as err:
                _log.warning(
                    "Ignoring unreadable federated bundle", extra={"trust_domain": trust_domain.name, "error": str(err)}
                )
                continue
            if federated_bundle is None:
                _log.debug("No federated bundle yet", extra={"trust_domain": trust_domain.name})
                continue
            federated[trust_domain] = federated_bundle
        self.cache.set_bundles(bundle, federated, tainted, tainted_jwt)
        self._metrics.set_gauge(("sync_bundles_total",), 1 + len(federated))
        self._stored.set_bundles(bundle, federated)

    def _federated_trust_domains(self) -> set[TrustDomain]:
        return self.cache.federated_trust_domains() | self._stored.federated_trust_domains()

    async def _sync_entries(self) -> None:
        synced = await (
            self._client.sync_entries(self._synced) if self._use_sync else self._client.authorized_entries()
        )
        entries: list[WorkloadEntry] = []
        stored: list[WorkloadEntry] = []
        self._synced = {entry.id: entry for entry in synced}
        agent_id = self._node.identity.spiffe_id if self._node.identity else None
        server_id = str(spire_ids.server_id(self.cache.trust_domain))
        for entry in synced:
            # Node alias entries describe this node; they are never served to workloads.
            if str(entry.parent_id) == server_id or entry.spiffe_id == agent_id:
                continue
            # As SPIRE: a stored SVID goes to its SVIDStore, never to a workload.
            (stored if entry.store_svid else entries).append(entry)
        self._report_entry_changes(self.cache.entries, {entry.id: entry for entry in entries})
        self.cache.set_entries(entries)
        self._stored.set_entries(stored)
        federated_needed = self._federated_trust_domains() - set(self.cache.federated)
        if federated_needed and self.cache.bundle is not None:
            await self._sync_bundles()

    def _report_entry_changes(self, old: Mapping[str, WorkloadEntry], new: Mapping[str, WorkloadEntry]) -> None:
        """SPIRE's sync statistics and LRU cache counters, and a debug line for each entry that changed."""
        added = [entry for entry_id, entry in new.items() if entry_id not in old]
        updated = [
            entry for entry_id, entry in new.items() if entry_id in old and old[entry_id].revision != entry.revision
        ]
        removed = [entry for entry_id, entry in old.items() if entry_id not in new]
        for message, changed in (("Entry created", added), ("Entry updated", updated), ("Entry removed", removed)):
            for entry in changed:
                _log.debug(
                    message,
                    extra={
                        "entry": entry.id,
                        "spiffe_id": str(entry.spiffe_id),
                        "selectors": ",".join(sorted(str(s) for s in entry.selectors)),
                        "revision_number": entry.revision,
                    },
                )
        for key, value in (
            (("sync_entries_total",), len(new)),
            (("sync_entries_missing",), len(added)),
            (("sync_entries_stale",), len(updated)),
            (("sync_entries_dropped",), len(removed)),
            (("lru_cache_record_map_size",), len(new)),
        ):
            self._metrics.set_gauge(key, value)
        self._metrics.incr_counter(("lru_cache_entry_add",), len(added))
        self._metrics.incr_counter(("lru_cache_entry_update",), len(updated))
        self._metrics.incr_counter(("lru_cache_entry_remove",), len(removed))

    def _keys_and_csrs(self, count: int) -> tuple[list[PrivateKeyTypes], list[bytes]]:
        keys = [_new_key(self._key_type) for _ in range(count)]
        return keys, [_workload_csr(key) for key in keys]

    async def _new_x509_svids(
        self, requests: list[tuple[str, bytes]]
    ) -> list[tuple[str, tuple[x509.Certificate, ...] | None, str]]:
        """One batch, waiting out the server's signing rate limit instead of backing off."""
        # The limiter refills every second: waits of 0.5 to 1 s, not growing.
        backoff = Backoff(0.75, multiplier=1.0, jitter=1 / 3)
        for attempt in range(RATE_LIMIT_RETRIES):
            try:
                return await self._client.new_x509_svids(requests)
            except RateLimited:
                if attempt == RATE_LIMIT_RETRIES - 1:
                    raise
                await asyncio.sleep(backoff.next_wait() or 0.0)
        raise AssertionError("unreachable")

    async def _mint_svids(self) -> None:
        needed = self.cache.entries_needing_svids()
        expiring, outdated = self.cache.renewal_reasons(needed)
        if expiring:
            self._metrics.add_sample(("cache_manager", "expiring_svids"), expiring)
            _log.debug("Updating expiring SVIDs in cache", extra={"expiring_svids": expiring})
        if outdated:
            self._metrics.add_sample(("cache_manager", "outdated_svids"), outdated)
            _log.debug("Updating SVIDs with outdated attributes in cache", extra={"outdated_svids": outdated})
        needed = [*needed, *self._stored.entries_needing_svids(self.cache.tainted_key_ids)]
        for start in range(0, len(needed), SVID_BATCH):
            batch = needed[start : start + SVID_BATCH]
            with (
                self._metrics.call("manager", "sync", "fetch_svids_updates"),
                start_span("agent.fetch_svids_updates", attributes={"pyspire.count": len(batch)}),
            ):
                await self._mint_batch(batch)
        self._metrics.set_gauge(("lru_cache_svid_map_size",), self.cache.svid_count())

    async def _mint_batch(self, batch: list[WorkloadEntry]) -> None:
        for entry in batch:
            held = self.cache.held_svid(entry.id) is not None
            _log.info(
                "Renewing X509-SVID" if held else "Creating X509-SVID",
                extra={"entry_id": entry.id, "spiffe_id": str(entry.spiffe_id)},
            )
        keys, csrs = await asyncio.to_thread(self._keys_and_csrs, len(batch))
        results = await self._new_x509_svids([(e.id, csr) for e, csr in zip(batch, csrs, strict=True)])
        issued: dict[str, IssuedSvid] = {}
        for entry, key, (entry_id, chain, message) in zip(batch, keys, results, strict=True):
            if chain is None:
                _log.warning("Server did not issue an X509-SVID", extra={"entry_id": entry_id, "error": message})
                continue
            key_der = key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            issued[entry_id] = IssuedSvid(entry.revision, chain, key, key_der)
            _log.debug(
                "SVID updated",
                extra={
                    "entry": entry_id,
                    "spiffe_id": str(entry.spiffe_id),
                    "expiration": chain[0].not_valid_after_utc.isoformat(),
                },
            )
        self.cache.put_svids(issued)
        self._stored.put_svids(issued)

    # --- the loop --------------------------------------------------------------------

    async def run(self, *, synced: bool = False) -> None:
        """Sync until cancelled; raises AgentStopped when the agent must stop.

        ``synced``: a sync has just completed (the daemon's first, before serving), so the
        first round waits one interval instead of syncing again at once. Failed rounds are
        retried for as long as the agent runs (it serves its cached SVIDs meanwhile), each wait
        longer, up to :data:`MAX_BACKOFF`. A refusal that no wait cures (not a transient
        status) is logged as an error naming it; a transient one as a warning.
        """
        backoff = Backoff(self._interval * 2, multiplier=2.0, max_interval=MAX_BACKOFF)
        wait_first = synced
        while True:
            if not self._node.saved:
                await asyncio.to_thread(self._node.save)
            if wait_first:
                wait_first = False
                self.cache.wanted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cache.wanted.wait(), timeout=self._interval)
                continue
            try:
                await self.sync_once()
                backoff.reset()
                delay = self._interval
            except ServerUnavailable as err:
                delay = self._retry_wait(backoff)
                _log.warning(
                    "Cannot reach the server; cached SVIDs are served until they expire",
                    extra={"error": str(err), "retry_in_seconds": round(delay, 1)},
                )
            except GRPCError as err:
                delay = self._retry_wait(backoff)
                if transient_status(err.status.value):
                    _log.warning(
                        "Sync failed",
                        extra={"code": err.status.name, "error": err.message, "retry_in_seconds": round(delay, 1)},
                    )
                else:
                    _log.error(
                        "Sync refused by the server; retrying will not help until its cause is fixed",
                        extra={"code": err.status.name, "error": err.message, "retry_in_seconds": round(delay, 1)},
                    )
            self.cache.wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cache.wanted.wait(), timeout=delay)
