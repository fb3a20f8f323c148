"""The SVIDStore contract: SVIDs of ``store_svid`` entries delivered to an external store.

The agent puts an entry's X509-SVID (with its private key) into the store at every
rotation, under the place the entry's selectors of the plugin's type name (``metadata``),
and deletes it when the entry goes. What the agent relies on: what is read back is the SVID
put (chain and key), a rotation replaces it, a delete removes it and deleting what is not
there is not an error (as SPIRE's stores answer a missing secret), and metadata the plugin
cannot use is refused on purpose. The subclass says how to read the store back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import SvidStore
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import TestCa
from pyspire.plugin.types import Role
from pyspire.spiffe import TrustDomain, X509Svid

__all__ = ["SvidStoreContract"]


def _same_svid(stored: X509Svid | None, put: X509Svid) -> None:
    assert stored is not None, "nothing is stored"
    assert stored.spiffe_id == put.spiffe_id
    assert stored.marshal() == put.marshal(), "the stored chain or key differs from the SVID put"


class SvidStoreContract(PluginContract):
    """Subclass as ``TestAcmeStore(SvidStoreContract)``; implement ``stored_svid``, set ``metadata``."""

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

    @pytest.fixture
    def store(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[SvidStore]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        assert isinstance(handle, SvidStore)
        yield handle
        handle.close()

    @pytest.fixture
    def ca(self) -> TestCa:
        """The CA that signs the SVIDs stored."""
        return TestCa.create(TEST_TRUST_DOMAIN)

    @staticmethod
    def federated(ca: TestCa) -> list[bytes]:
        """A federated trust domain's roots, as the agent hands them (PEM)."""
        return [TestCa.create(TrustDomain("partner.test")).bundle().marshal_x509_pem()]

    def test_the_svid_put_is_stored(self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa) -> None:
        svid = ca.svid("/db")
        store.put_x509_svid(svid, self.metadata, self.federated(ca))
        _same_svid(self.stored_svid(plugin_data, self.metadata), svid)
        assert self.stored_svid(plugin_data, self.other_metadata) is None

    def test_a_rotation_replaces_the_stored_svid(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        store.put_x509_svid(ca.svid("/db"), self.metadata, [])
        rotated = ca.svid("/db")
        store.put_x509_svid(rotated, self.metadata, [])
        _same_svid(self.stored_svid(plugin_data, self.metadata), rotated)

    def test_svids_under_different_metadata_are_kept_apart(
        self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        first, second = ca.svid("/db"), ca.svid("/cache")
        store.put_x509_svid(first, self.metadata, [])
        store.put_x509_svid(second, self.other_metadata, [])
        _same_svid(self.stored_svid(plugin_data, self.metadata), first)
        _same_svid(self.stored_svid(plugin_data, self.other_metadata), second)

    def test_delete_removes_only_that_svid(self, store: SvidStore, plugin_data: Mapping[str, Any], ca: TestCa) -> None:
        kept = ca.svid("/cache")
        store.put_x509_svid(ca.svid("/db"), self.metadata, [])
        store.put_x509_svid(kept, self.other_metadata, [])
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
                store.put_x509_svid(ca.svid("/db"), metadata, [])
            assert_deliberate(raised.value, store)
