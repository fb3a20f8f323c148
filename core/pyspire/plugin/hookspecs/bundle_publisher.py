"""BundlePublisher: publishes the server's trust bundle where others fetch it. Zero or more."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle


@hookspec(firstresult=True)
def publish_bundle(bundle: Bundle) -> None:
    """Publish ``bundle``, the complete bundle of the server's trust domain.

    Called in a worker thread when the server starts, after every change of the bundle, and
    every 30 seconds in any case (as SPIRE's publishing manager does), so a publish that failed
    is tried again and a store that lost the bundle gets it back. The same bundle therefore
    arrives many times: publishing must be idempotent, and a plugin may skip writing a bundle
    equal to the one it last published. Raise a plugin error when publishing failed; the
    server logs it as an error and calls again at the next change or interval.

    :class:`pyspire.plugin.bundle_format.BundleFormat` writes the bundle in the formats SPIRE's
    publishers offer under their ``format`` key (``spiffe``, ``jwks``, ``pem``).
    """
