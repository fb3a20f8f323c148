"""What the agent knows: its authorized entries, the SVIDs it holds for them, the bundles.

Everything here runs on the agent's event loop; the Workload API streams wait on
:meth:`WorkloadCache.wait_for_change` and rebuild their full answer whenever the generation
moves. The X509-SVID store is an LRU bounded by ``x509_svid_cache_max_size``: SVIDs that a
live subscriber matches are never evicted, and an entry without an SVID is minted as soon as a
workload asks for it. JWT-SVIDs are cached per SPIFFE ID and audience until half their life.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.plugin.selectors import Selector
from pyspire.spiffe import Bundle, SpiffeId, TrustDomain

__all__ = ["CachedJwtSvid", "IssuedSvid", "WorkloadCache", "WorkloadEntry", "WorkloadIdentity", "issued_by_any"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkloadEntry:
    """An authorized registration entry, as the agent uses it."""

    id: str
    spiffe_id: SpiffeId
    parent_id: SpiffeId
    selectors: frozenset[Selector]
    federates_with: tuple[TrustDomain, ...]
    hint: str
    revision: int
    created_at: int
    store_svid: bool = False
    """The entry's SVID goes to an SVIDStore plugin, never to a workload."""
    admin: bool = False
    downstream: bool = False

    def matches(self, selectors: frozenset[Selector]) -> bool:
        """A workload gets this entry when every selector of the entry is one of its own."""
        return bool(self.selectors) and self.selectors <= selectors


@dataclass(frozen=True)
class IssuedSvid:
    """An X509-SVID the agent holds for an entry, with its private key."""

    entry_revision: int
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKeyTypes
    private_key_der: bytes

    @property
    def not_before(self) -> datetime:
        return self.chain[0].not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.chain[0].not_valid_after_utc

    def due(self, now: datetime, availability_target: timedelta | None = None) -> bool:
        """Time to rotate: past half its life, or (with SPIRE's ``availability_target``) when
        less than that target is left, whichever comes first."""
        half_life = self.not_before + (self.not_after - self.not_before) / 2
        if availability_target is not None:
            half_life = min(half_life, self.not_after - availability_target)
        return now >= half_life

    def signed_by(self, authority_key_ids: frozenset[bytes]) -> bool:
        """Whether any certificate of the chain was issued by one of these authority keys."""
        return issued_by_any(self.chain, authority_key_ids)


def issued_by_any(chain: Iterable[x509.Certificate], authority_key_ids: frozenset[bytes]) -> bool:
    """Whether any certificate of ``chain`` was issued by one of these authority keys (tainted ones, say)."""
    for certificate in chain:
        try:
            aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            continue
        if aki.key_identifier is not None and aki.key_identifier in authority_key_ids:
            return True
    return False


@dataclass(frozen=True)
class WorkloadIdentity:
    """An entry a workload matched, with its SVID."""

    entry: WorkloadEntry
    svid: IssuedSvid


@dataclass(frozen=True)
class CachedJwtSvid:
    """A JWT-SVID kept for reuse until half its life."""

    token: str
    issued_at: datetime
    expires_at: datetime

    def fresh(self, now: datetime) -> bool:
        return now < self.issued_at + (self.expires_at - self.issued_at) / 2

    @property
    def key_id(self) -> str:
        """The ``kid`` of the token's header (empty if it cannot be read)."""
        header = self.token.split(".", 1)[0]
        try:
            decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (binascii.Error, ValueError):
            return ""
        kid = decoded.get("kid") if isinstance(decoded, dict) else None
        return kid if isinstance(kid, str) else ""


class WorkloadCache:
    """Entries, SVIDs and bundles for one agent."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        x509_max: int = 1000,
        jwt_max: int = 1000,
        availability_target: timedelta | None = None,
    ) -> None:
        """An empty cache for ``trust_domain``; SVID stores bounded as SPIRE bounds them (0 = unbounded)."""
        self.trust_domain = trust_domain
        self._availability_target = availability_target
        self._x509_max = x509_max
        self._jwt_max = jwt_max
        self.entries: dict[str, WorkloadEntry] = {}
        self._svids: OrderedDict[str, IssuedSvid] = OrderedDict()
        self._jwt: OrderedDict[tuple[str, tuple[str, ...]], CachedJwtSvid] = OrderedDict()
        self.bundle: Bundle | None = None
        self.federated: dict[TrustDomain, Bundle] = {}
        self.tainted_key_ids: frozenset[bytes] = frozenset()
        self.tainted_jwt_key_ids: frozenset[str] = frozenset()
        self._subscribers: dict[int, frozenset[Selector]] = {}
        self._next_subscriber = 0
        self.generation = 0
        self._changed = asyncio.Event()
        self.wanted = asyncio.Event()
        """Set when a subscriber matched entries that have no SVID: the manager syncs at once."""

    # --- change notification ----------------------------------------------------------

    def _bump(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, generation: int) -> int:
        """Return once the cache has moved past ``generation``; the new generation."""
        while self.generation == generation:
            await self._changed.wait()
        return self.generation

    @contextmanager
    def subscription(self, selectors: frozenset[Selector]) -> Iterator[None]:
        """Mark a live subscriber: its SVIDs are not evicted, missing ones are minted at once."""
        key = self._next_subscriber
        self._next_subscriber += 1
        self._subscribers[key] = selectors
        if any(entry.id not in self._svids for entry in self.matching(selectors)):
            self.wanted.set()
        try:
            yield
        finally:
            del self._subscribers[key]

    def _subscribed_entry_ids(self) -> set[str]:
        found: set[str] = set()
        for selectors in self._subscribers.values():
            found.update(entry.id for entry in self.matching(selectors))
        return found

    # --- updates from the server -----------------------------------------------------

    def set_entries(self, entries: Iterable[WorkloadEntry]) -> None:
        """Replace the entry set; SVIDs of removed entries are dropped at once."""
        new = {entry.id: entry for entry in entries}
        if new == self.entries:
            return
        self.entries = new
        for entry_id in [i for i in self._svids if i not in new]:
            del self._svids[entry_id]
        self._bump()

    def set_bundles(
        self,
        bundle: Bundle,
        federated: Mapping[TrustDomain, Bundle],
        tainted_key_ids: frozenset[bytes],
        tainted_jwt_key_ids: frozenset[str] = frozenset(),
    ) -> None:
        """Replace the bundles (own and federated) and the sets of tainted authority keys.

        As SPIRE's agent: cached JWT-SVIDs signed by a newly tainted JWT key are dropped, so
        the next request for them mints a token signed by the active key.
        """
        federated = dict(federated)
        if (
            bundle == self.bundle
            and federated == self.federated
            and tainted_key_ids == self.tainted_key_ids
            and tainted_jwt_key_ids == self.tainted_jwt_key_ids
        ):
            return
        self.bundle = bundle
        self.federated = federated
        self.tainted_key_ids = tainted_key_ids
        if tainted_jwt_key_ids - self.tainted_jwt_key_ids:
            self._drop_jwt_signed_by(tainted_jwt_key_ids)
        self.tainted_jwt_key_ids = tainted_jwt_key_ids
        self._bump()

    def _drop_jwt_signed_by(self, key_ids: frozenset[str]) -> None:
        removed: dict[str, int] = {}
        for key, cached in list(self._jwt.items()):
            kid = cached.key_id
            if kid in key_ids:
                del self._jwt[key]
                removed[kid] = removed.get(kid, 0) + 1
        for kid, count in sorted(removed.items()):
            _log.info(
                "JWT-SVIDs were removed from the JWT cache because they were issued by a tainted authority",
                extra={"jwt_authority_key_ids": kid, "tainted_jwt_svids": count},
            )

    def put_svids(self, svids: Mapping[str, IssuedSvid]) -> None:
        """Store newly issued SVIDs, then evict unsubscribed ones beyond the size limit."""
        if not svids:
            return
        for entry_id, svid in svids.items():
            if entry_id in self.entries:
                self._svids[entry_id] = svid
                self._svids.move_to_end(entry_id)
        self._evict()
        self._bump()

    def _evict(self) -> None:
        if not self._x509_max or len(self._svids) <= self._x509_max:
            return
        protected = self._subscribed_entry_ids()
        for entry_id in list(self._svids):
            if len(self._svids) <= self._x509_max:
                break
            if entry_id not in protected:
                del self._svids[entry_id]

    def svid_count(self) -> int:
        return len(self._svids)

    def held_svid(self, entry_id: str) -> IssuedSvid | None:
        """The SVID held for ``entry_id``, if any."""
        return self._svids.get(entry_id)

    def renewal_reasons(self, entries: Iterable[WorkloadEntry], now: datetime | None = None) -> tuple[int, int]:
        """Of ``entries`` holding an SVID: how many are expiring, and how many outdated (entry changed)."""
        now = now or datetime.now(UTC)
        expiring = outdated = 0
        for entry in entries:
            held = self._svids.get(entry.id)
            if held is None:
                continue
            if held.due(now, self._availability_target):
                expiring += 1
            elif held.entry_revision != entry.revision:
                outdated += 1
        return expiring, outdated

    def jwt_count(self) -> int:
        return len(self._jwt)

    # --- what needs minting ----------------------------------------------------------

    def entries_needing_svids(self, now: datetime | None = None) -> list[WorkloadEntry]:
        """Entries whose SVID is missing, half-way through its life, stale or tainted.

        Missing SVIDs are minted while there is room in the cache, and always for entries a
        live subscriber matches; held SVIDs are always renewed.
        """
        now = now or datetime.now(UTC)
        subscribed = self._subscribed_entry_ids()
        room = (self._x509_max or len(self.entries) + 1) - len(self._svids)
        needed = []
        for entry in sorted(self.entries.values(), key=_order):
            held = self._svids.get(entry.id)
            if held is not None:
                if (
                    held.due(now, self._availability_target)
                    or held.entry_revision != entry.revision
                    or held.signed_by(self.tainted_key_ids)
                ):
                    needed.append(entry)
            elif entry.id in subscribed:
                needed.append(entry)
            elif room > 0:
                needed.append(entry)
                room -= 1
        return needed

    # --- what workloads see ----------------------------------------------------------

    def matching(self, selectors: frozenset[Selector]) -> list[WorkloadEntry]:
        """The entries a workload with ``selectors`` gets, oldest entry first."""
        return sorted((e for e in self.entries.values() if e.matches(selectors)), key=_order)

    def identities(self, selectors: frozenset[Selector]) -> list[WorkloadIdentity]:
        """The matched entries that have a valid SVID, oldest entry first."""
        now = datetime.now(UTC)
        found = []
        for entry in self.matching(selectors):
            svid = self._svids.get(entry.id)
            if svid is not None and svid.not_after > now:
                self._svids.move_to_end(entry.id)
                found.append(WorkloadIdentity(entry, svid))
        return found

    def federated_bundles(self, entries: Iterable[WorkloadEntry]) -> dict[TrustDomain, Bundle]:
        """The federated bundles that ``entries`` federate with (those the agent has)."""
        found: dict[TrustDomain, Bundle] = {}
        for entry in entries:
            for trust_domain in entry.federates_with:
                bundle = self.federated.get(trust_domain)
                if bundle is not None:
                    found[trust_domain] = bundle
        return found

    def federated_trust_domains(self) -> set[TrustDomain]:
        """Every trust domain some entry federates with."""
        return {td for entry in self.entries.values() for td in entry.federates_with}

    # --- JWT-SVIDs -------------------------------------------------------------------

    def cached_jwt(self, spiffe_id: SpiffeId, audience: tuple[str, ...]) -> CachedJwtSvid | None:
        key = (str(spiffe_id), tuple(sorted(audience)))
        cached = self._jwt.get(key)
        if cached is None or not cached.fresh(datetime.now(UTC)):
            return None
        self._jwt.move_to_end(key)
        return cached

    def put_jwt(self, spiffe_id: SpiffeId, audience: tuple[str, ...], svid: CachedJwtSvid) -> None:
        self._jwt[(str(spiffe_id), tuple(sorted(audience)))] = svid
        while self._jwt_max and len(self._jwt) > self._jwt_max:
            self._jwt.popitem(last=False)


def _order(entry: WorkloadEntry) -> tuple[int, str]:
    return (entry.created_at, entry.id)
