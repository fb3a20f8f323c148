"""DataStore: the server's durable state. Exactly one per server.

Everything that must survive a restart, and everything several servers share in a
high-availability deployment, goes through these hooks: registration entries, attested
nodes, bundles, join tokens, federation relationships, CA journals, and the log of change
events that the servers' in-memory caches follow.

Contract for implementations (the plugin test kit's ``DataStoreContract`` checks it):

- Every hook that writes is one transaction: it happens completely or not at all, and a
  concurrent reader never sees half of it. Several server processes may call the same
  database at once; the results must be as if the calls ran one after another.
- Every committed write that changes an entry, a node, a bundle or a federation
  relationship appends a :class:`~pyspire.plugin.records.ChangeEvent` in the same
  transaction. Event sequence numbers grow in commit order: once a reader has seen event
  ``n``, no event numbered below ``n`` can appear later. (A counter row updated inside each
  writing transaction gives this on every engine; auto-increment IDs alone do not.)
- Not-found reads return ``None``; writes to something missing raise
  :class:`~pyspire.plugin.NotFound`; creating what exists raises
  :class:`~pyspire.plugin.AlreadyExists`; a database that cannot be reached raises
  :class:`~pyspire.plugin.Unavailable` (the server fails the call closed and retries later).
- Hooks are called from worker threads, concurrently; the two node reads made for the
  event loop, ``read_attested_node_at_once`` and ``read_attested_node_on_loop``, on the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pyspire.plugin.markers import hookspec
from pyspire.plugin.records import (
    AttestedNode,
    BundleDeleteMode,
    BundleRecord,
    CaJournal,
    ChangeEvent,
    CreatedEntry,
    EntryFilter,
    FederationRelationship,
    JoinToken,
    NodeFilter,
    NodeReadAtOnce,
    Page,
    RegistrationEntry,
)
from pyspire.spiffe import SpiffeId, TrustDomain

# --- bundles -----------------------------------------------------------------------------


@hookspec(firstresult=True)
def fetch_bundle(trust_domain: TrustDomain) -> BundleRecord | None:
    """The bundle of ``trust_domain`` (the server's own or a federated one), or None."""


@hookspec(firstresult=True)
def list_bundles(page: Page) -> tuple[Sequence[BundleRecord], str]:
    """Bundles ordered by trust domain name, and the token of the next page ("" at the end)."""


@hookspec(firstresult=True)
def count_bundles() -> int:
    """How many bundles are stored (the server's own and the federated ones)."""


@hookspec(firstresult=True)
def create_bundle(bundle: BundleRecord) -> BundleRecord:
    """Store a new bundle; AlreadyExists if the trust domain already has one."""


@hookspec(firstresult=True)
def set_bundle(bundle: BundleRecord) -> BundleRecord:
    """Store ``bundle``, replacing any bundle of the same trust domain (an upsert)."""


@hookspec(firstresult=True)
def modify_bundle(
    trust_domain: TrustDomain, update: Callable[[BundleRecord | None], BundleRecord | None]
) -> BundleRecord | None:
    """Read-modify-write one bundle atomically.

    Calls ``update`` with the current bundle (None when there is none) while holding the
    row against concurrent writers (``SELECT ... FOR UPDATE``, or SQLite's write lock), then
    stores what it returns. Returning the very object it was given, or None, writes nothing.
    Returns the stored bundle. ``update`` is pure and fast (it may be called again if the
    transaction is retried). The server appends, prunes, taints and revokes authorities this
    way, so that two servers changing the shared bundle at once both take effect.
    """


@hookspec(firstresult=True)
def delete_bundle(trust_domain: TrustDomain, mode: BundleDeleteMode) -> None:
    """Delete a bundle; entries federating with it are handled as ``mode`` says.

    NotFound if there is no such bundle; FailedPrecondition under RESTRICT when an entry
    federates with it.
    """


# --- registration entries ----------------------------------------------------------------


@hookspec(firstresult=True)
def create_registration_entries(entries: Sequence[RegistrationEntry]) -> Sequence[CreatedEntry]:
    """Create entries in one transaction; one result per input, in order.

    An entry with an empty ``id`` gets a new random one (a UUID). ``created_at`` is set to
    now and ``revision_number`` to 0. An entry whose SPIFFE ID, parent ID and selector set
    equal an existing entry's, or whose ID is taken, is not created: its result carries the
    existing entry and ``created=False``. The server validated the entries; federated trust
    domains must have a stored bundle (FailedPrecondition for the whole batch otherwise).
    """


@hookspec(firstresult=True)
def fetch_registration_entry(entry_id: str) -> RegistrationEntry | None:
    """The entry with ``entry_id`` (with selectors, DNS names, federated domains), or None."""


@hookspec(firstresult=True)
def fetch_registration_entries(entry_ids: Sequence[str]) -> Sequence[RegistrationEntry]:
    """The entries among ``entry_ids`` that exist, in any order; missing IDs are skipped."""


@hookspec(firstresult=True)
def list_registration_entries(entry_filter: EntryFilter, page: Page) -> tuple[Sequence[RegistrationEntry], str]:
    """Entries matching ``entry_filter`` ordered by ID, and the next page token."""


@hookspec(firstresult=True)
def count_registration_entries(entry_filter: EntryFilter) -> int:
    """How many entries match ``entry_filter`` (same semantics as listing)."""


@hookspec(firstresult=True)
def update_registration_entry(entry: RegistrationEntry) -> RegistrationEntry:
    """Replace the entry with ``entry.id`` by ``entry``, incrementing its revision.

    ``created_at`` is kept and the stored ``revision_number`` + 1 is written, whatever
    ``entry`` says. NotFound if it does not exist; AlreadyExists if the change would make it
    equal (SPIFFE ID, parent ID, selectors) to another entry.
    """


@hookspec(firstresult=True)
def delete_registration_entry(entry_id: str) -> RegistrationEntry | None:
    """Delete an entry (and its selectors, DNS names, federations); return it, or None."""


@hookspec(firstresult=True)
def prune_registration_entries(expires_before: int) -> int:
    """Delete entries whose ``expires_at`` is set and before ``expires_before``; count them."""


# --- attested nodes ----------------------------------------------------------------------


@hookspec(firstresult=True)
def create_attested_node(node: AttestedNode) -> AttestedNode:
    """Store a newly attested node with its selectors; AlreadyExists if its ID is taken."""


@hookspec(firstresult=True)
def fetch_attested_node(spiffe_id: SpiffeId) -> AttestedNode | None:
    """The node with ``spiffe_id``, with its node selectors, or None if it is not attested."""


@hookspec(firstresult=True)
def read_attested_node_at_once(spiffe_id: SpiffeId) -> NodeReadAtOnce | None:
    """The node, read on the server's event loop by a read that cannot wait.

    Called before :func:`fetch_attested_node` for the node check every agent call makes.
    Handing that read to a worker thread cost more CPU than the read itself on a local
    database (the thread wake-ups and the interpreter lock passed back and forth), so a
    store that can answer from a read that never waits (on a lock, the network, a pool)
    answers here. Return None when it cannot answer that way this time: the server then
    calls :func:`fetch_attested_node` from a worker thread. The answer must be what
    ``fetch_attested_node`` would return at that moment: the committed state, never a cache.
    """


@hookspec(firstresult=True)
def read_attested_node_on_loop(spiffe_id: SpiffeId) -> Awaitable[NodeReadAtOnce | None] | None:
    """A coroutine reading the node on the server's event loop, for a database across the network.

    Called when :func:`read_attested_node_at_once` gave no answer, before the worker-thread
    :func:`fetch_attested_node`. A network round trip always waits, so it cannot be read at
    once; but handing it to a thread costs the server several times the CPU an asyncio
    driver's read does. Return a coroutine (the hook itself must not wait) that answers
    ``NodeReadAtOnce(node)``, or None when it cannot read that way this time: no connection
    free at once, the connection lost, no answer within a deadline of the store's own. Then
    the server reads from a worker thread, and that read reports what is wrong. Return None
    from the hook itself when the store has no such read. The answer is the committed state,
    as for ``read_attested_node_at_once``; the coroutine runs on the loop it was made on.
    """


@hookspec(firstresult=True)
def list_attested_nodes(node_filter: NodeFilter, page: Page) -> tuple[Sequence[AttestedNode], str]:
    """Nodes matching ``node_filter`` ordered by SPIFFE ID, and the next page token."""


@hookspec(firstresult=True)
def count_attested_nodes(node_filter: NodeFilter) -> int:
    """How many attested nodes match ``node_filter`` (same semantics as listing)."""


@hookspec(firstresult=True)
def modify_attested_node(spiffe_id: SpiffeId, update: Callable[[AttestedNode], AttestedNode]) -> AttestedNode:
    """Read-modify-write one node atomically (renewal, serial promotion, ban, re-attestation).

    Same rules as :func:`modify_bundle`; NotFound if the node does not exist. The node's
    selectors are replaced by those of the returned node.
    """


@hookspec(firstresult=True)
def delete_attested_node(spiffe_id: SpiffeId) -> AttestedNode | None:
    """Delete a node and its selectors; return it, or None if there was none."""


@hookspec(firstresult=True)
def prune_attested_nodes(expired_before: int, include_non_reattestable: bool) -> int:
    """Delete nodes whose SVID expired before ``expired_before``; count them.

    Banned nodes are never pruned; nodes that cannot re-attest (trust on first use) only
    with ``include_non_reattestable``.
    """


# --- join tokens -------------------------------------------------------------------------


@hookspec(firstresult=True)
def create_join_token(token: JoinToken) -> None:
    """Store a new join token; AlreadyExists if a token with that value exists."""


@hookspec(firstresult=True)
def take_join_token(token: str) -> JoinToken | None:
    """Delete the token and return it — to exactly one caller, however many race.

    Returns None if it does not exist (or another caller took it). Expiry is the caller's
    business: an expired token is still deleted and returned.
    """


@hookspec(firstresult=True)
def prune_join_tokens(expires_before: int) -> int:
    """Delete tokens that expired before ``expires_before``; count them."""


# --- federation relationships ------------------------------------------------------------


@hookspec(firstresult=True)
def create_federation_relationship(relationship: FederationRelationship) -> FederationRelationship:
    """Store a federation relationship; AlreadyExists if the trust domain has one."""


@hookspec(firstresult=True)
def fetch_federation_relationship(trust_domain: TrustDomain) -> FederationRelationship | None:
    """The federation relationship with ``trust_domain``, or None when there is none."""


@hookspec(firstresult=True)
def list_federation_relationships(page: Page) -> tuple[Sequence[FederationRelationship], str]:
    """Relationships ordered by trust domain, and the next page token."""


@hookspec(firstresult=True)
def update_federation_relationship(relationship: FederationRelationship) -> FederationRelationship:
    """Replace the relationship of ``relationship.trust_domain``; NotFound if there is none."""


@hookspec(firstresult=True)
def delete_federation_relationship(trust_domain: TrustDomain) -> None:
    """Delete the relationship (its bundle stays, entries may still use it); NotFound if none."""


# --- CA journals -------------------------------------------------------------------------


@hookspec(firstresult=True)
def set_ca_journal(journal: CaJournal) -> CaJournal:
    """Insert (``id`` 0) or replace (``id`` given) a journal; returns it with its ID."""


@hookspec(firstresult=True)
def fetch_ca_journal(active_x509_authority_id: str) -> CaJournal | None:
    """The journal whose active X.509 authority is ``active_x509_authority_id``."""


@hookspec(firstresult=True)
def list_ca_journals() -> Sequence[CaJournal]:
    """Every CA journal stored: one per server that shares this database."""


@hookspec(firstresult=True)
def delete_ca_journal(journal_id: int) -> None:
    """Delete a journal (the server prunes those whose authorities all expired)."""


# --- change events -----------------------------------------------------------------------


@hookspec(firstresult=True)
def list_change_events(after_sequence: int, limit: int) -> Sequence[ChangeEvent]:
    """Up to ``limit`` events with a sequence above ``after_sequence``, in order."""


@hookspec(firstresult=True)
def last_change_sequence() -> int:
    """The sequence of the newest committed event (0 if none).

    A cache loads the full state, then follows events after the sequence it read *before*
    loading, so that nothing committed during the load is missed.
    """


@hookspec(firstresult=True)
def prune_change_events(created_before: int) -> int:
    """Delete events created before ``created_before``; count them."""
