"""Bundles by trust domain (this server's and the federated ones), with change listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from pyspire.plugin.records import BundleRecord
from pyspire.spiffe import TrustDomain

__all__ = ["BundleCache"]

_log = logging.getLogger(__name__)


class BundleCache:
    """Trust domain -> bundle record; listeners hear about every change."""

    def __init__(self) -> None:
        """An empty cache."""
        self._bundles: dict[TrustDomain, BundleRecord] = {}
        self._listeners: list[Callable[[TrustDomain], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[TrustDomain], None]) -> None:
        """Call ``listener(trust_domain)`` after each change of that trust domain's bundle."""
        self._listeners.append(listener)

    def load(self, bundles: Iterable[BundleRecord]) -> None:
        """Replace every bundle (and tell listeners about each)."""
        with self._lock:
            previous = set(self._bundles)
            self._bundles = {bundle.trust_domain: bundle for bundle in bundles}
            changed = previous | set(self._bundles)
        for trust_domain in changed:
            self._notify(trust_domain)

    def put(self, bundle: BundleRecord) -> None:
        """Add or replace a bundle."""
        with self._lock:
            if self._bundles.get(bundle.trust_domain) == bundle:
                return
            self._bundles[bundle.trust_domain] = bundle
        self._notify(bundle.trust_domain)

    def remove(self, trust_domain: TrustDomain) -> None:
        """Forget a bundle."""
        with self._lock:
            if self._bundles.pop(trust_domain, None) is None:
                return
        self._notify(trust_domain)

    def get(self, trust_domain: TrustDomain) -> BundleRecord | None:
        """The bundle of ``trust_domain``, or None."""
        return self._bundles.get(trust_domain)

    def all(self) -> list[BundleRecord]:
        """Every bundle, sorted by trust domain."""
        return [self._bundles[td] for td in sorted(self._bundles)]

    def _notify(self, trust_domain: TrustDomain) -> None:
        for listener in list(self._listeners):
            try:
                listener(trust_domain)
            except Exception:
                _log.exception("Bundle change listener failed")
