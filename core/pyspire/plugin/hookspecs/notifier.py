"""Notifier: told when the trust bundle changes. Zero or more per server.

SPIRE deprecates Notifier in favour of BundlePublisher; pyspire keeps the type so SPIRE
configs that declare one load, with the same single hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle


@hookspec
def notify_bundle_updated(bundle: Bundle) -> None:
    """The server's own bundle changed (a CA or JWT key was added or removed).

    Called after the change is stored, in a worker thread, with the complete bundle. Errors
    are logged and do not undo the change.
    """
