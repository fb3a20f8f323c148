"""Bundles of several trust domains, and the SPIFFE bundle map that carries them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pyspire.spiffe.bundle import Bundle, BundleError, load_json
from pyspire.spiffe.spiffeid import SpiffeIdError, TrustDomain

__all__ = ["BundleSet"]


class BundleSet:
    """A set of bundles, at most one per trust domain; a :class:`BundleSource`."""

    def __init__(self, bundles: Iterable[Bundle] = ()) -> None:
        """A set holding ``bundles`` (a later bundle for one trust domain replaces an earlier)."""
        self._bundles: dict[TrustDomain, Bundle] = {}
        for bundle in bundles:
            self.put(bundle)

    def put(self, bundle: Bundle) -> None:
        """Add ``bundle``, replacing any bundle of its trust domain."""
        self._bundles[bundle.trust_domain] = bundle

    def remove(self, trust_domain: TrustDomain) -> None:
        """Remove the bundle of ``trust_domain`` if there is one."""
        self._bundles.pop(trust_domain, None)

    def get(self, trust_domain: TrustDomain) -> Bundle | None:
        """The bundle of ``trust_domain``, or None."""
        return self._bundles.get(trust_domain)

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """:class:`BundleSource` protocol: the bundle of ``trust_domain``, or None."""
        return self._bundles.get(trust_domain)

    def trust_domains(self) -> list[TrustDomain]:
        """The trust domains present, sorted."""
        return sorted(self._bundles)

    def __iter__(self) -> Iterator[Bundle]:
        return iter([self._bundles[td] for td in sorted(self._bundles)])

    def __len__(self) -> int:
        return len(self._bundles)

    def __contains__(self, trust_domain: object) -> bool:
        return trust_domain in self._bundles

    @classmethod
    def parse_map(cls, data: bytes | str) -> BundleSet:
        """Parse a SPIFFE bundle map: ``{"trust_domains": {"<name>": <SPIFFE bundle>}}``.

        Trust domain names are parsed strictly; a name given twice is an error (JSON would
        otherwise silently keep the last one).
        """
        document = load_json(data, "bundle map")
        if not isinstance(document, dict):
            raise BundleError("not_json", "a bundle map must be a JSON object")
        members = document.get("trust_domains")
        if not isinstance(members, dict):
            raise BundleError("trust_domains_missing", 'a bundle map must have a "trust_domains" object')
        bundles = []
        for name, body in members.items():
            try:
                trust_domain = TrustDomain.parse(name)
            except SpiffeIdError as err:
                raise BundleError("invalid_trust_domain", f'bundle map key "{name}": {err}') from None
            bundles.append(Bundle.from_spiffe_document(trust_domain, body))
        return cls(bundles)

    def marshal_map(self) -> bytes:
        """The set as a SPIFFE bundle map (JSON)."""
        members: dict[str, Any] = {td.name: self._bundles[td].to_spiffe_document() for td in sorted(self._bundles)}
        return json.dumps({"trust_domains": members}, indent=2).encode()
