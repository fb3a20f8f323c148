"""Keeping the vault tidy as SPIRE's ``azure_key_vault`` does: rotated keys and stale keys deleted.

- A key replaced by rotation is deleted by a worker thread (soft-deleted, where the vault
  keeps deleted keys), retried with back-off while Key Vault cannot be reached; a key Key
  Vault no longer has is dropped.
- Every 6 hours each key of this server is updated with the operations it already has
  (sign, verify): that moves its ``Updated`` time, which is how other servers see it in use.
- Every 48 hours, keys tagged with this trust domain and another server's ID that were not
  updated for two weeks are deleted: keys of servers that are gone.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyOperation
from pyspire.plugin import PluginLogger

__all__ = ["KEY_OPERATIONS", "TAG_SERVER_ID", "TAG_TRUST_DOMAIN", "KeyVersion", "Upkeep"]

TAG_TRUST_DOMAIN = "spire-server-td"
TAG_SERVER_ID = "spire-server-id"
KEY_OPERATIONS: list[str | KeyOperation] = [KeyOperation.sign, KeyOperation.verify]
REFRESH_KEYS_EVERY = timedelta(hours=6)
DISPOSE_KEYS_EVERY = timedelta(hours=48)
STALE_KEY_AGE = timedelta(days=14)
_QUEUE_SIZE = 120
_BACKOFF_MIN = 1.0
_BACKOFF_MAX = 60.0

KeyVersion = tuple[str, str]
"""A key of this server in use: its Key Vault name and version."""


class Upkeep:
    """The background work of one configured plugin; ``stop`` ends it."""

    def __init__(
        self,
        client: KeyClient,
        trust_domain: str,
        server_id: str,
        in_use: Callable[[], Iterable[KeyVersion]],
        log: PluginLogger,
    ) -> None:
        self._client = client
        self._trust_domain = trust_domain
        self._server_id = server_id
        self._in_use = in_use
        self._log = log
        self._deletions: queue.Queue[str | None] = queue.Queue(_QUEUE_SIZE)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._delete_forever, name="azure_key_vault-deletion", daemon=True),
            threading.Thread(target=self._tidy_forever, name="azure_key_vault-upkeep", daemon=True),
        ]

    def start(self) -> None:
        """Start the deletion worker and the periodic tasks."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads (deletions still queued are left to another server's stale-key sweep)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._deletions.put_nowait(None)  # wakes the deletion worker
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)

    def schedule_deletion(self, name: str) -> None:
        """Queue the key ``name`` for deletion; a full queue is logged and the key left."""
        try:
            self._deletions.put_nowait(name)
            self._log.debug("Key enqueued for deletion", extra={"key_name": name})
        except queue.Full:
            self._log.error("Failed to enqueue key for deletion", extra={"key_name": name})

    def _delete_forever(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stopping.is_set():
            name = self._deletions.get()
            if name is None:
                continue
            try:
                self._client.begin_delete_key(name)
            except ResourceNotFoundError:
                self._log.error("Failed to schedule key deletion", extra={"key_name": name, "reason": "No such key"})
                continue
            except AzureError as err:
                self._log.error(
                    "It was not possible to schedule key for deletion. Trying to re-enqueue it for deletion",
                    extra={"key_name": name, "reason": str(err)},
                )
                self.schedule_deletion(name)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self._log.debug("Key deleted", extra={"key_name": name})
            backoff = _BACKOFF_MIN

    def _tidy_forever(self) -> None:
        tasks: list[tuple[timedelta, Callable[[], None]]] = [
            (REFRESH_KEYS_EVERY, self.refresh_keys),
            (DISPOSE_KEYS_EVERY, lambda: self.dispose_stale_keys(datetime.now(UTC))),
        ]
        due = [datetime.now(UTC) + period for period, _ in tasks]
        while True:
            wait = max(0.0, (min(due) - datetime.now(UTC)).total_seconds())
            if self._stopping.wait(wait):
                return
            now = datetime.now(UTC)
            for index, (period, task) in enumerate(tasks):
                if due[index] <= now:
                    due[index] = now + period
                    try:
                        task()
                    except Exception as err:  # a malformed answer must not end the upkeep: the next round still comes
                        self._log.error("Key Vault upkeep failed", extra={"reason": f"{type(err).__name__}: {err}"})

    def refresh_keys(self) -> None:
        """Update every key this server uses with its own operations, moving its ``Updated`` time."""
        self._log.debug("Refreshing keys")
        for name, version in list(self._in_use()):
            try:
                self._client.get_key(name, version)
            except AzureError:
                self._log.warning("failed fetching cached key to refresh it", extra={"key_name": name})
                continue
            try:
                self._client.update_key_properties(name, version, key_operations=KEY_OPERATIONS)
            except AzureError as err:
                self._log.error("Failed to refresh key", extra={"key_name": name, "reason": str(err)})

    def dispose_stale_keys(self, now: datetime) -> None:
        """Delete keys of other servers of the trust domain not updated for two weeks."""
        self._log.debug("Looking for keys in trust domain to dispose")
        try:
            for key in self._client.list_properties_of_keys():
                tags = key.tags or {}
                if tags.get(TAG_TRUST_DOMAIN) != self._trust_domain:
                    continue
                # This server's replaced keys were queued when they were rotated.
                if tags.get(TAG_SERVER_ID) == self._server_id:
                    continue
                if key.updated_on is not None and key.name and now - key.updated_on > STALE_KEY_AGE:
                    self.schedule_deletion(key.name)
        except AzureError as err:
            self._log.error("Failed to list keys to dispose", extra={"reason": str(err)})
