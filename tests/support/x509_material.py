"""X.509 material that a test sets by hand: a source for pyspire.spiffe.tls contexts without an agent.

The contexts only read ``svid``, ``bundles`` and ``generation`` (the protocol
``tls.X509MaterialSource``); this one changes them when told to, the way an X509Source does on
a push from the agent.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, X509Svid

from tests.support.pki import Issued, make_leaf


def svid_of(issuer: Issued, spiffe_id: str, *, intermediates: Sequence[Issued] = ()) -> X509Svid:
    """An X509-SVID for ``spiffe_id`` issued by ``issuer`` (with ``intermediates`` after the leaf)."""
    leaf = make_leaf(issuer, spiffe_id)
    return X509Svid.from_parts([leaf.certificate, *(i.certificate for i in intermediates)], leaf.key)


def bundles_of(**roots: Sequence[x509.Certificate]) -> BundleSet:
    """A bundle set: ``bundles_of(example_org=[ca.certificate])`` (underscores stand for dots)."""
    return BundleSet(Bundle(TrustDomain.parse(name.replace("_", ".")), list(certs)) for name, certs in roots.items())


class HandSetSource:
    """An SVID and bundles that change only when the test calls :meth:`update`."""

    def __init__(self, svid: X509Svid, bundles: BundleSet) -> None:
        self._svid = svid
        self._bundles = bundles
        self.generation = 1
        self.closed = False

    @property
    def svid(self) -> X509Svid:
        if self.closed:
            raise RuntimeError("the test closed this source")
        return self._svid

    @property
    def bundles(self) -> BundleSet:
        if self.closed:
            raise RuntimeError("the test closed this source")
        return BundleSet(self._bundles)

    def update(self, svid: X509Svid | None = None, bundles: BundleSet | None = None) -> None:
        """New material, as an agent push would bring."""
        self._svid = svid or self._svid
        self._bundles = bundles or self._bundles
        self.generation += 1
