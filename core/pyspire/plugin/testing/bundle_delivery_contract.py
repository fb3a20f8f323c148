"""The Notifier and BundlePublisher contracts: the bundle the server hands over arrives.

Both types take the server's bundle whenever it changes and put it somewhere (a ConfigMap,
a bucket, a file). What the server relies on: the bundle delivered is the one handed over
(every X.509 authority, every JWT key), a newer one replaces it, handing the same one over
again is harmless (the server may, at start and on retries), and a destination that cannot
be reached is a deliberate plugin error, never a crash. The subclass says how to read back
what was delivered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError, Unimplemented
from pyspire.plugin.facades import BundlePublisher, Notifier, PluginHandle
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import TestCa
from pyspire.plugin.types import Role
from pyspire.spiffe import Bundle

__all__ = ["BundlePublisherContract", "NotifierContract"]


class _BundleDeliveryContract(PluginContract):
    role: ClassVar[Role] = "server"
    delivers_jwt_authorities: ClassVar[bool] = True
    """False for a plugin whose destination holds only the X.509 roots (PEM), as SPIRE's ``k8sbundle``."""

    def _same_authorities(self, delivered: Bundle | None, handed: Bundle) -> None:
        assert delivered is not None, "nothing was delivered"
        assert delivered.trust_domain == handed.trust_domain
        assert set(delivered.x509_authorities) == set(handed.x509_authorities), "X.509 authorities differ"
        if self.delivers_jwt_authorities:
            assert set(delivered.jwt_authorities) == set(handed.jwt_authorities), "JWT authorities differ"

    def deliver(self, handle: PluginHandle, bundle: Bundle) -> None:
        raise NotImplementedError

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        """Read back what the plugin configured with ``plugin_data`` delivered (None: nothing yet).

        Subclasses implement it against the destination: the file, the fake bucket, the
        fake API server.
        """
        raise NotImplementedError("the contract needs delivered_bundle() to read back what was delivered")

    @pytest.fixture
    def unreachable_plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        """A configuration whose destination cannot be reached (a closed port, an unwritable path)."""
        raise NotImplementedError("the contract needs an unreachable_plugin_data fixture")

    @pytest.fixture
    def handle(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[PluginHandle]:
        """The configured plugin; closed after the test."""
        loaded = self.load(plugin_data, core_config)
        yield loaded
        loaded.close()

    @pytest.fixture
    def ca(self) -> TestCa:
        """The trust domain's CA whose bundle is delivered."""
        return TestCa.create(TEST_TRUST_DOMAIN)

    def test_the_bundle_handed_over_is_delivered(
        self, handle: PluginHandle, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        bundle = ca.bundle()
        self.deliver(handle, bundle)
        self._same_authorities(self.delivered_bundle(plugin_data), bundle)

    def test_a_newer_bundle_replaces_the_delivered_one(
        self, handle: PluginHandle, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        self.deliver(handle, ca.bundle())
        rotated = ca.bundle(TestCa.create(TEST_TRUST_DOMAIN).certificate)
        self.deliver(handle, rotated)
        self._same_authorities(self.delivered_bundle(plugin_data), rotated)

    def test_handing_the_same_bundle_over_again_is_harmless(
        self, handle: PluginHandle, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        bundle = ca.bundle()
        self.deliver(handle, bundle)
        self.deliver(handle, bundle)
        self._same_authorities(self.delivered_bundle(plugin_data), bundle)

    def test_an_unreachable_destination_is_a_deliberate_error(
        self, unreachable_plugin_data: Mapping[str, Any], core_config: CoreConfig, ca: TestCa
    ) -> None:
        handle = self.load(unreachable_plugin_data, core_config)
        try:
            with pytest.raises(PluginError) as raised:
                self.deliver(handle, ca.bundle())
            assert_deliberate(raised.value, handle)
        finally:
            handle.close()


class NotifierContract(_BundleDeliveryContract):
    """Subclass as ``TestAcmeNotifier(NotifierContract)``; implement ``delivered_bundle``.

    A notifier that implements ``notify_bundle_loaded`` is held to the same promises at start,
    where a failure stops the server: the bundle arrives, and an unreachable destination is a
    deliberate error (the server names it when it refuses to start).
    """

    plugin_type: ClassVar[str] = "Notifier"

    def deliver(self, handle: PluginHandle, bundle: Bundle) -> None:
        """Notify the plugin as the server does when its bundle changes."""
        assert isinstance(handle, Notifier)
        handle.notify_bundle_updated(bundle)

    def test_the_bundle_loaded_at_start_is_delivered_or_unimplemented(
        self, handle: PluginHandle, plugin_data: Mapping[str, Any], ca: TestCa
    ) -> None:
        assert isinstance(handle, Notifier)
        bundle = ca.bundle()
        if not handle.implements("notify_bundle_loaded"):
            # The server calls only the notifiers that implement it.
            with pytest.raises(Unimplemented):
                handle.notify_bundle_loaded(bundle)
            return
        handle.notify_bundle_loaded(bundle)
        self._same_authorities(self.delivered_bundle(plugin_data), bundle)

    def test_an_unreachable_destination_at_start_is_a_deliberate_error(
        self, unreachable_plugin_data: Mapping[str, Any], core_config: CoreConfig, ca: TestCa
    ) -> None:
        handle = self.load(unreachable_plugin_data, core_config)
        assert isinstance(handle, Notifier)
        try:
            if not handle.implements("notify_bundle_loaded"):
                return  # never called at start: nothing can fail there
            with pytest.raises(PluginError) as raised:
                handle.notify_bundle_loaded(ca.bundle())
            assert_deliberate(raised.value, handle)
        finally:
            handle.close()


class BundlePublisherContract(_BundleDeliveryContract):
    """Subclass as ``TestAcmePublisher(BundlePublisherContract)``; implement ``delivered_bundle``."""

    plugin_type: ClassVar[str] = "BundlePublisher"

    def deliver(self, handle: PluginHandle, bundle: Bundle) -> None:
        """Publish as the server does on start and on every change."""
        assert isinstance(handle, BundlePublisher)
        handle.publish_bundle(bundle)
