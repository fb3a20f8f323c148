"""Attested agents by SPIFFE ID: what every agent call is authenticated against."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pyspire.plugin.records import AttestedNode
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId

__all__ = ["NodeCache"]


class NodeCache:
    """Agent ID -> attested node, current as of the follower's last event (and our own writes)."""

    def __init__(self) -> None:
        """An empty cache."""
        self._nodes: dict[SpiffeId, AttestedNode] = {}
        self._selectors: dict[SpiffeId, frozenset[Selector]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._nodes)

    def load(self, nodes: Iterable[AttestedNode]) -> None:
        """Replace every node."""
        with self._lock:
            self._nodes = {node.spiffe_id: node for node in nodes}
            self._selectors = {node_id: frozenset(node.selectors) for node_id, node in self._nodes.items()}

    def put(self, node: AttestedNode) -> None:
        """Add or replace a node."""
        with self._lock:
            self._nodes[node.spiffe_id] = node
            self._selectors[node.spiffe_id] = frozenset(node.selectors)

    def remove(self, spiffe_id: SpiffeId) -> None:
        """Forget a node."""
        with self._lock:
            self._nodes.pop(spiffe_id, None)
            self._selectors.pop(spiffe_id, None)

    def get(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        """The node, or None if it is not attested."""
        return self._nodes.get(spiffe_id)

    def selectors(self, spiffe_id: SpiffeId) -> frozenset[Selector]:
        """The node's selectors (empty if unknown)."""
        return self._selectors.get(spiffe_id, frozenset())
