"""Registration entries, indexed for "which entries may this agent have?".

An agent is authorized for the entries parented to its own ID and to the ID of every
node-alias entry it belongs to, and, recursively, for the entries parented to those
entries' IDs. A node-alias entry is one parented to the server
(``spiffe://<td>/spire/server``); an agent belongs to it when every selector of the alias is
among the agent's node selectors.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pyspire.plugin.records import RegistrationEntry
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId

__all__ = ["AuthorizedEntries", "EntryIndex"]


@dataclass(frozen=True)
class AuthorizedEntries:
    """The entries authorized to one agent, as of index ``generation``."""

    generation: int
    entries: tuple[RegistrationEntry, ...]
    by_id: dict[str, RegistrationEntry]


class EntryIndex:
    """All registration entries of the trust domain, with the indexes authorization needs."""

    def __init__(self, server_id: SpiffeId) -> None:
        """Index entries for the server ``server_id`` (the parent of node-alias entries)."""
        self._server_id = server_id
        self._lock = threading.RLock()
        self._entries: dict[str, RegistrationEntry] = {}
        self._children: defaultdict[SpiffeId, dict[str, None]] = defaultdict(dict)
        self._by_spiffe_id: defaultdict[SpiffeId, dict[str, None]] = defaultdict(dict)
        self._aliases_by_selector: defaultdict[Selector, set[str]] = defaultdict(set)
        self._generation = 0
        self._authorized: dict[SpiffeId, tuple[int, frozenset[Selector], AuthorizedEntries]] = {}

    @property
    def generation(self) -> int:
        """Grows with every change; an agent's authorized set is reused while it is the same."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, entries: Iterable[RegistrationEntry]) -> None:
        """Replace the whole index (cold start, or a full reload)."""
        with self._lock:
            self._entries.clear()
            self._children.clear()
            self._by_spiffe_id.clear()
            self._aliases_by_selector.clear()
            for entry in entries:
                self._add(entry)
            self._changed()

    def upsert(self, entry: RegistrationEntry) -> None:
        """Add an entry, or replace the one with its ID."""
        with self._lock:
            self._discard(entry.id)
            self._add(entry)
            self._changed()

    def remove(self, entry_id: str) -> None:
        """Forget an entry (no-op if unknown)."""
        with self._lock:
            if self._discard(entry_id):
                self._changed()

    def _changed(self) -> None:
        self._generation += 1
        self._authorized.clear()

    def _add(self, entry: RegistrationEntry) -> None:
        self._entries[entry.id] = entry
        self._children[entry.parent_id][entry.id] = None
        self._by_spiffe_id[entry.spiffe_id][entry.id] = None
        if entry.parent_id == self._server_id:
            for selector in entry.selectors:
                self._aliases_by_selector[selector].add(entry.id)

    def _discard(self, entry_id: str) -> bool:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return False
        siblings = self._children.get(entry.parent_id)
        if siblings is not None:
            siblings.pop(entry_id, None)
            if not siblings:
                del self._children[entry.parent_id]
        same = self._by_spiffe_id.get(entry.spiffe_id)
        if same is not None:
            same.pop(entry_id, None)
            if not same:
                del self._by_spiffe_id[entry.spiffe_id]
        if entry.parent_id == self._server_id:
            for selector in entry.selectors:
                members = self._aliases_by_selector.get(selector)
                if members is not None:
                    members.discard(entry_id)
                    if not members:
                        del self._aliases_by_selector[selector]
        return True

    def get(self, entry_id: str) -> RegistrationEntry | None:
        """The entry with ``entry_id``."""
        return self._entries.get(entry_id)

    def by_spiffe_id(self, spiffe_id: SpiffeId) -> list[RegistrationEntry]:
        """Entries whose SPIFFE ID is ``spiffe_id`` (admin and downstream checks)."""
        with self._lock:
            return [self._entries[i] for i in self._by_spiffe_id.get(spiffe_id, ())]

    def aliases_of(self, node_selectors: frozenset[Selector]) -> list[RegistrationEntry]:
        """The node-alias entries an agent with ``node_selectors`` belongs to."""
        with self._lock:
            candidates: set[str] = set()
            for selector in node_selectors:
                candidates.update(self._aliases_by_selector.get(selector, ()))
            found = [self._entries[c] for c in candidates]
        return [alias for alias in found if set(alias.selectors) <= node_selectors]

    def authorized(self, agent_id: SpiffeId, node_selectors: frozenset[Selector]) -> AuthorizedEntries:
        """The entries ``agent_id`` may mint SVIDs for, reused until the index changes."""
        cached = self._authorized.get(agent_id)
        generation = self._generation
        if cached is not None and cached[0] == generation and cached[1] == node_selectors:
            return cached[2]
        with self._lock:
            generation = self._generation
            roots = [agent_id, *(alias.spiffe_id for alias in self.aliases_of(node_selectors))]
            seen_parents: set[SpiffeId] = set()
            found: dict[str, RegistrationEntry] = {}
            stack = list(reversed(roots))
            while stack:
                parent = stack.pop()
                if parent in seen_parents:
                    continue
                seen_parents.add(parent)
                children = [self._entries[i] for i in self._children.get(parent, ())]
                for child in children:
                    found.setdefault(child.id, child)
                stack.extend(reversed([child.spiffe_id for child in children]))
            result = AuthorizedEntries(generation, tuple(found.values()), found)
            self._authorized[agent_id] = (generation, node_selectors, result)
            return result

    def all(self) -> list[RegistrationEntry]:
        """Every entry (a snapshot)."""
        with self._lock:
            return list(self._entries.values())
