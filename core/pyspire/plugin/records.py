"""The server's state as a DataStore keeps it: entries, nodes, bundles, tokens, journals.

Plain immutable values. Times are Unix seconds (``int``; ``0`` means "not set"), as SPIRE's
API carries them, so records compare and serialise without timezone surprises.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId, TrustDomain

__all__ = [
    "AttestedNode",
    "BundleDeleteMode",
    "BundleRecord",
    "CaJournal",
    "ChangeEvent",
    "ChangeKind",
    "CreatedEntry",
    "EntryFilter",
    "FederationRelationship",
    "JoinToken",
    "JwtAuthority",
    "MatchBehavior",
    "NodeFilter",
    "NodeReadAtOnce",
    "Page",
    "RegistrationEntry",
    "X509Authority",
]


class MatchBehavior(enum.Enum):
    """How a set in a filter matches a record's set (SPIRE's MatchBehavior, same numbers)."""

    EXACT = 0
    """The sets are equal."""
    SUBSET = 1
    """The record's set is contained in the filter's."""
    SUPERSET = 2
    """The record's set contains the filter's."""
    ANY = 3
    """The sets share at least one element."""

    def matches(self, record: Iterable[Hashable], wanted: Iterable[Hashable]) -> bool:
        """Whether a record's set (``record``) matches the filter's set (``wanted``)."""
        have, want = set(record), set(wanted)
        if self is MatchBehavior.EXACT:
            return have == want
        if self is MatchBehavior.SUBSET:
            return have <= want
        if self is MatchBehavior.SUPERSET:
            return have >= want
        return bool(have & want)


@dataclass(frozen=True, slots=True)
class RegistrationEntry:
    """A registration entry: who (selectors under a parent) gets which SPIFFE ID.

    ``selectors`` and ``federates_with`` are kept sorted and without duplicates
    (:meth:`normalized`), so two entries with the same sets compare equal.
    ``x509_svid_ttl``/``jwt_svid_ttl`` of 0 mean the server default.
    """

    id: str
    spiffe_id: SpiffeId
    parent_id: SpiffeId
    selectors: tuple[Selector, ...]
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    federates_with: tuple[TrustDomain, ...] = ()
    admin: bool = False
    downstream: bool = False
    expires_at: int = 0
    dns_names: tuple[str, ...] = ()
    revision_number: int = 0
    store_svid: bool = False
    hint: str = ""
    created_at: int = 0
    disable_x509_svid_prefetch: bool = False
    jwt_svid_include_jti: bool = False

    def normalized(self) -> RegistrationEntry:
        """The same entry with sorted, de-duplicated selectors and federated trust domains."""
        return replace(
            self,
            selectors=tuple(sorted(set(self.selectors))),
            federates_with=tuple(sorted(set(self.federates_with))),
        )


@dataclass(frozen=True, slots=True)
class AttestedNode:
    """An attested agent, the serial numbers of its SVIDs, and its node selectors.

    Agents are authenticated by serial number: a call presenting the SVID with
    ``cert_serial_number`` is the agent; one presenting ``new_cert_serial_number`` (set by
    a renewal) is too, and promotes it to current. A banned node has both serials empty.
    """

    spiffe_id: SpiffeId
    attestation_type: str
    cert_serial_number: str
    cert_not_after: int
    new_cert_serial_number: str = ""
    new_cert_not_after: int = 0
    can_reattest: bool = False
    agent_version: str = ""
    selectors: tuple[Selector, ...] = ()

    @property
    def banned(self) -> bool:
        """Whether an operator banned the node (it may not attest until deleted)."""
        return not self.cert_serial_number and not self.new_cert_serial_number


@dataclass(frozen=True, slots=True)
class NodeReadAtOnce:
    """What a read that could not wait found: the node, or None when it is not attested.

    Wrapped so that "not attested" (``NodeReadAtOnce(None)``) differs from "could not be read
    at once" (the hook's plain None) in a firstresult hook.
    """

    node: AttestedNode | None


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A single-use join token."""

    token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class X509Authority:
    """A root (or upstream root) certificate in a bundle, as DER."""

    der: bytes
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class JwtAuthority:
    """A JWT signing public key in a bundle (SubjectPublicKeyInfo DER)."""

    key_id: str
    public_key_der: bytes
    expires_at: int = 0
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class BundleRecord:
    """A trust domain's bundle as the server stores it, with SPIRE's extra metadata.

    ``refresh_hint`` is in seconds (0 = none); ``sequence_number`` grows with every change
    of the server's own bundle.
    """

    trust_domain: TrustDomain
    x509_authorities: tuple[X509Authority, ...] = ()
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    refresh_hint: int = 0
    sequence_number: int = 0


class BundleDeleteMode(enum.Enum):
    """What to do with entries that federate with a bundle being deleted (SPIRE numbers)."""

    RESTRICT = 0
    """Refuse to delete a bundle some entry federates with."""
    DELETE = 1
    """Delete those entries too."""
    DISSOCIATE = 2
    """Remove the trust domain from those entries' ``federates_with``."""


@dataclass(frozen=True, slots=True)
class FederationRelationship:
    """How this server fetches a foreign trust domain's bundle."""

    trust_domain: TrustDomain
    bundle_endpoint_url: str
    profile: Literal["https_web", "https_spiffe"]
    endpoint_spiffe_id: SpiffeId | None = None


@dataclass(frozen=True, slots=True)
class CaJournal:
    """This server's CA history (opaque to the datastore), keyed by its active X.509 CA."""

    id: int
    active_x509_authority_id: str
    data: bytes


class ChangeKind(enum.Enum):
    """What a change event is about; its ``key`` says which one."""

    ENTRY = "entry"
    """A registration entry (key: entry ID) was created, updated or deleted."""
    NODE = "node"
    """An attested node (key: agent SPIFFE ID) was created, updated or deleted."""
    BUNDLE = "bundle"
    """A bundle (key: trust domain name) was created, updated or deleted."""
    FEDERATION = "federation"
    """A federation relationship (key: trust domain name) changed."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One committed change. ``sequence`` grows in commit order with no gaps visible later.

    Caches that follow the datastore read events after the last sequence they saw and
    re-read the records the events name; they never miss one (see the DataStore hookspec).
    """

    sequence: int
    kind: ChangeKind
    key: str
    created_at: int


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries to list or count; every set field must match (AND)."""

    by_spiffe_id: SpiffeId | None = None
    by_parent_id: SpiffeId | None = None
    by_selectors: tuple[tuple[Selector, ...], MatchBehavior] | None = None
    by_federates_with: tuple[tuple[TrustDomain, ...], MatchBehavior] | None = None
    by_hint: str | None = None
    by_downstream: bool | None = None


@dataclass(frozen=True, slots=True)
class NodeFilter:
    """Which attested nodes to list or count; every set field must match (AND)."""

    by_attestation_type: str | None = None
    by_selectors: tuple[tuple[Selector, ...], MatchBehavior] | None = None
    by_banned: bool | None = None
    by_can_reattest: bool | None = None
    by_expires_before: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page request: at most ``size`` items after the position ``token`` marks.

    ``size`` 0 asks for everything. Tokens are opaque strings the datastore returned.
    """

    size: int = 0
    token: str = ""


@dataclass(frozen=True, slots=True)
class CreatedEntry:
    """The outcome of creating one entry in a batch.

    ``created`` is false when an entry with the same SPIFFE ID, parent ID and selectors (or
    the same entry ID) already existed; ``entry`` is then that existing entry, unchanged.
    """

    entry: RegistrationEntry
    created: bool
