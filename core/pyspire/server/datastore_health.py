"""Whether the datastore does its job: what ``healthcheck`` and readiness report.

SPIRE's server health reads the server's own bundle from the datastore on every check: a
database that cannot be read (or has lost the bundle) is unhealthy. A database that can be
read but no longer written (a full disk, a read-only replica after a failover) passes that
check, yet the server can then attest no agent and store no entry. So the outcome of every
datastore write is watched too: once a write fails for the datastore's own reasons
(``Unavailable``/``Internal``, not an answer such as "already exists"), the server is
unhealthy until a write succeeds again. Every check (``healthcheck``'s gRPC health, and
readiness, once a minute) also tries a write that changes nothing at all, so a database that
turned read-only is reported before any agent or admin is refused, and recovery is seen without
waiting for the next real write.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from pyspire.plugin.errors import Internal, PluginError, Unavailable
from pyspire.plugin.facades import DataStore
from pyspire.spiffe import TrustDomain

__all__ = ["DatastoreHealth"]

_log = logging.getLogger(__name__)

_READ_PREFIXES = ("fetch_", "list_", "count_", "last_", "read_")
_NOT_CALLS = frozenset({"configure", "close"})


def _is_write(hook: str) -> bool:
    return hook not in _NOT_CALLS and not hook.startswith(_READ_PREFIXES)


class DatastoreHealth:
    """Watches a DataStore's writes and checks it as SPIRE's health service does."""

    def __init__(self, datastore: DataStore, trust_domain: TrustDomain) -> None:
        """Watch ``datastore`` (every write from now on) for the server of ``trust_domain``."""
        self._datastore = datastore
        self._trust_domain = trust_domain
        self._lock = threading.Lock()
        self._failed_write: str | None = None
        datastore.observe(self._observed)

    def _observed(self, hook: str, error: BaseException | None) -> None:
        if not _is_write(hook):
            return
        with self._lock:
            if error is None:
                if self._failed_write is not None:
                    _log.info("Datastore writes succeed again", extra={"hook": hook})
                self._failed_write = None
            elif isinstance(error, (Unavailable, Internal)):
                if self._failed_write is None:
                    _log.error(
                        "Datastore write failed: the server reports itself unhealthy", extra={"error": str(error)}
                    )
                self._failed_write = f"{hook}: {error}"

    @property
    def failed_write(self) -> str | None:
        """The last write that failed (hook and error), while no write has succeeded since."""
        return self._failed_write

    def probe_write(self) -> None:
        """Try one write that changes nothing: removing join tokens that expired before 1970.

        A read-only database refuses it all the same (the statement is refused, not its rows);
        its outcome, seen by the observer, records or clears the failure. Blocking.
        """
        with contextlib.suppress(PluginError):  # failing: the observer keeps the reason
            self._datastore.prune_join_tokens(0)

    def problem(self) -> str | None:
        """Why the datastore is unhealthy, or None: reads the bundle, and tries a write that changes nothing.

        Blocking (it calls the datastore): run it in a worker thread.
        """
        try:
            bundle = self._datastore.fetch_bundle(self._trust_domain)
        except PluginError as err:
            return f"unable to fetch bundle: {err.message}"
        if bundle is None:
            return "bundle is missing"
        # Not only after a failed write: a database that turned read-only while no write was
        # asked of it would be reported healthy until an agent's renewal or an admin's entry failed.
        self.probe_write()
        failed = self._failed_write
        return None if failed is None else f"the datastore refused a write: {failed}"
