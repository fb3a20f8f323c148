"""The SVIDStore contract: SVIDs of ``store_svid`` entries delivered to an external store.

The agent puts an entry's X509-SVID (with its private key) into the store when it is minted,
at every rotation and whenever the bundles change, under the place the entry's selectors of
the plugin's type name (``metadata``), with the agent's trust bundle and the bundles of the
trust domains the entry federates with; it deletes it when the entry goes. What the agent
relies on: what is read back is the SVID put (chain and key) with the bundles put beside it,
a later put replaces both, a delete removes it and deleting what is not there is not an
error (as SPIRE's stores answer a missing secret), and metadata the plugin cannot use is
refused on purpose (by a delete with ``InvalidArgument``, which ends the agent's retries).
The subclass says how to read the store back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import InvalidArgument, PluginError
from pyspire.plugin.facades import SvidStore
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import TestCa
from pyspire.plugin.types import Role
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

__all__ = ["SvidStoreContract"]

PARTNER = TrustDomain("partner.test")
"""The federated trust domain the suite's entries federate with."""


def _same_svid(stored: X509Svid | None, put: X509Svid) -> None:
    assert stored is not None, "nothing is stored"
    assert stored.spiffe_id == put.spiffe_id
    assert stored.marshal() == put.marshal(), "the stored chain or key differs from the SVID put"


def _same_roots(stored: Mapping[TrustDomain, Bundle], put: Mapping[TrustDomain, Bundle]) -> None:
    assert set(stored) == set(put), (
        f"bundles stored for {sorted(td.name for td in stored)}, put for {sorted(td.name for td in put)}"
    )
    for trust_domain, bundle in put.items():
        assert set(stored[trust_domain].x509_authorities) == set(bundle.x509_authorities), (
            f"the X.509 authorities stored for {trust_domain.name} differ from those put"
        )


class SvidStoreContract(PluginContract):
    """Subclass as ``TestAcmeStore(SvidStoreContract)``; implement ``stored_svid`` and
    ``stored_bundles``, set ``metadata``."""

    role: ClassVar[Role] = "agent"
    plugin_type: ClassVar[str] = "SVIDStore"
    metadata: ClassVar[Sequence[str]]
    """Selector values (without the plugin's name) saying where to store: ``("name:db-cert",)``."""
    other_metadata: ClassVar[Sequence[str]]
    """Another place in the same store, which the tests check is left alone."""
    unusable_metadata: ClassVar[Sequence[str]] = ()
    """Metadata the plugin must refuse (missing the key that names the place, say)."""

    def stored_svid(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> X509Svid | None:
        """Read back the SVID stored under ``metadata`` (None when there is none)."""
        raise NotImplementedError("the contract needs stored_svid() to read the store back")

    def stored_bundles(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> Mapping[TrustDomain, Bundle]:
        """Read back the bundles stored with the SVID under ``metadata``, by trust domain.

        The agent's own trust domain and every federated one; only their X.509 authorities
        are compared (``Bundle.parse_x509`` reads PEM certificates).
        """
        raise NotImplementedError("the contract needs stored_bundles() to read the stored bundles back")

    @pytest.fixture
    def store(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[SvidStore]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        assert isinstance(handle, SvidStore)
        yield handle
        handle.close()

    @pytest.fixture
    def ca(self) -> TestCa:
        """The CA that signs the SVIDs stored; its bundle is the agent's trust bundle."""
        return TestCa.create(TEST_TRUST_DOMAIN)

    @staticmethod
    def federated() -> dict[TrustDomain, Bundle]:
        """A federated trust domain's bundle, as the agent hands those of an entry's ``federates_with``."""
        return {PARTNER: TestCa.create(PARTNER).bundle()}

    def test_the_svid_put_is_stored(self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa) -> None:
        svid = ca.svid("/db")
        store.put_x509_svid(svid, ca.bundle(), self.federated(), self.metadata)
        _same_svid(self.stored_svid(plugin_data, self.metadata), svid)
        assert self.stored_svid(plugin_data, self.other_metadata) is None

    def test_the_bundles_are_stored_with_the_svid(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        bundle, federated = ca.bundle(), self.federated()
        store.put_x509_svid(ca.svid("/db"), bundle, federated, self.metadata)
        _same_roots(self.stored_bundles(plugin_data, self.metadata), {TEST_TRUST_DOMAIN: bundle, **federated})

    def test_a_bundle_change_replaces_the_stored_bundles(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        svid = ca.svid("/db")
        store.put_x509_svid(svid, ca.bundle(), self.federated(), self.metadata)
        # A new root, and the entry no longer federates: what the store holds must say both.
        rotated = ca.bundle(TestCa.create(TEST_TRUST_DOMAIN).certificate)
        store.put_x509_svid(svid, rotated, {}, self.metadata)
        _same_roots(self.stored_bundles(plugin_data, self.metadata), {TEST_TRUST_DOMAIN: rotated})

    def test_a_rotation_replaces_the_stored_svid(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        store.put_x509_svid(ca.svid("/db"), ca.bundle(), {}, self.metadata)
        rotated = ca.svid("/db")
        store.put_x509_svid(rotated, ca.bundle(), {}, self.metadata)
        _same_svid(self.stored_svid(plugin_data, self.metadata), rotated)

    def test_svids_under_different_metadata_are_kept_apart(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        first, second = ca.svid("/db"), ca.svid("/cache")
        store.put_x509_svid(first, ca.bundle(), self.federated(), self.metadata)
        store.put_x509_svid(second, ca.bundle(), {}, self.other_metadata)
        _same_svid(self.stored_svid(plugin_data, self.metadata), first)
        _same_svid(self.stored_svid(plugin_data, self.other_metadata), second)
        assert set(self.stored_bundles(plugin_data, self.other_metadata)) == {TEST_TRUST_DOMAIN}

    def test_delete_removes_only_that_svid(self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa) -> None:
        kept = ca.svid("/cache")
        store.put_x509_svid(ca.svid("/db"), ca.bundle(), {}, self.metadata)
        store.put_x509_svid(kept, ca.bundle(), {}, self.other_metadata)
        store.delete_x509_svid(self.metadata)
        assert self.stored_svid(plugin_data, self.metadata) is None
        _same_svid(self.stored_svid(plugin_data, self.other_metadata), kept)

    def test_deleting_what_is_not_stored_is_not_an_error(
        self, store: SvidStore, plugin_data: Mapping[str, Any]
    ) -> None:
        store.delete_x509_svid(self.metadata)
        assert self.stored_svid(plugin_data, self.metadata) is None

    def test_metadata_the_plugin_cannot_use_is_refused(self, store: SvidStore, ca: TestCa) -> None:
        for metadata in ([], self.unusable_metadata):
            with pytest.raises(PluginError) as raised:
                store.put_x509_svid(ca.svid("/db"), ca.bundle(), {}, metadata)
            assert_deliberate(raised.value, store)

    def test_deleting_under_unusable_metadata_is_an_invalid_argument(self, store: SvidStore) -> None:
        # InvalidArgument tells the agent nothing can ever be deleted there; any other error
        # has it try again every round.
        for metadata in ([], self.unusable_metadata):
            with pytest.raises(InvalidArgument) as raised:
                store.delete_x509_svid(metadata)
            assert_deliberate(raised.value, store)
