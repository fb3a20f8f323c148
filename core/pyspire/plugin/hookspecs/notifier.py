"""Notifier: told about the server's own trust bundle. Zero or more per server.

SPIRE deprecates Notifier in favour of BundlePublisher; pyspire keeps the type, with SPIRE's
two events, so SPIRE configs that declare one load and work the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle


@hookspec(firstresult=True)
def notify_bundle_loaded(bundle: Bundle) -> None:
    """The server has started with ``bundle`` (SPIRE's "bundle loaded" event).

    Called once, after the CA is ready and before the server answers any API, in a worker
    thread, with the complete bundle of the server's trust domain. Raise a plugin error (for
    example :class:`~pyspire.plugin.errors.Unavailable`) when the bundle could not be delivered
    where it must be: the server then refuses to start, as SPIRE does, because a verifier that
    never got the bundle would reject every SVID the server issues.
    """


@hookspec(firstresult=True)
def notify_bundle_updated(bundle: Bundle) -> None:
    """The server's bundle changed: a CA or JWT key was added, tainted, revoked or pruned.

    Called after the change is stored (by this server or another one sharing the datastore),
    in a worker thread, with the complete new bundle. Changes in quick succession may be
    reported once, with the latest bundle. Errors are logged as warnings and do not undo the
    change; the next change calls the plugin again.
    """
