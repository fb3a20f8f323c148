"""BundlePublisher: publishes the trust bundle somewhere others can fetch it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle


@hookspec
def publish_bundle(bundle: Bundle) -> None:
    """Publish the server's current bundle (on start and on every change).

    Called in a worker thread; may be called again with the same bundle, so publishing must
    be idempotent. Raise a plugin error to have the server log it and retry at the next
    change.
    """
