"""Keeping KMS tidy as SPIRE's ``aws_kms`` does: rotated keys deleted, stale ones found and deleted.

- A key replaced by rotation is scheduled for deletion (7 days' waiting period) by a worker
  thread, retried with back-off while KMS cannot be reached.
- Every 6 hours each alias of this server is updated to the key it already names, which
  moves its ``LastUpdatedDate``: that is how other servers see the key is still in use. An
  alias that now names another key (a replica sharing ``key_identifier_value`` rotated it) is
  left alone.
- Every 24 hours, aliases of the trust domain that belong to another server and were not
  refreshed for two weeks are deleted, and their keys scheduled for deletion.
- Every 48 hours, keys of the trust domain (found by description) that have no alias and are
  older than 48 hours are scheduled for deletion: keys left over when a rotation failed
  between creating the key and naming it.

Prefixes are matched up to their ``/``, so a server of ``example.org`` never takes
``example.org2``'s keys for its own trust domain's.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pyspire.plugin import PluginLogger
from pyspire_aws_common import error_code

from pyspire_aws_kms.naming import KeyNames

__all__ = ["KeyEntry", "Upkeep"]

PENDING_WINDOW_DAYS = 7
REFRESH_ALIASES_EVERY = timedelta(hours=6)
DISPOSE_ALIASES_EVERY = timedelta(hours=24)
DISPOSE_KEYS_EVERY = timedelta(hours=48)
STALE_ALIAS_AGE = timedelta(days=14)
ORPHANED_KEY_AGE = timedelta(hours=48)
_QUEUE_SIZE = 120
_BACKOFF_MIN = 1.0
_BACKOFF_MAX = 60.0
_FINAL_DELETION_ERRORS = frozenset({"NotFoundException", "InvalidArnException", "KMSInvalidStateException"})


@dataclass(frozen=True)
class KeyEntry:
    """A key of this server: its KMS ARN and the alias that names it."""

    arn: str
    alias: str


class Upkeep:
    """The background work of one configured plugin; ``stop`` ends it."""

    def __init__(self, kms: Any, names: KeyNames, entries: Callable[[], Iterable[KeyEntry]], log: PluginLogger) -> None:
        self._kms = kms
        self._names = names
        self._entries = entries
        self._log = log
        self._deletions: queue.Queue[str | None] = queue.Queue(_QUEUE_SIZE)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._delete_forever, name="aws_kms-deletion", daemon=True),
            threading.Thread(target=self._tidy_forever, name="aws_kms-upkeep", daemon=True),
        ]

    def start(self) -> None:
        """Start the deletion worker and the periodic tasks."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads (deletions still queued are left to the orphaned-key sweep)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._deletions.put_nowait(None)  # wakes the deletion worker (a full queue keeps it busy anyway)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)

    def schedule_deletion(self, arn: str) -> None:
        """Queue ``arn`` for deletion; a full queue is logged and the key left to the sweep."""
        try:
            self._deletions.put_nowait(arn)
            self._log.debug("Key enqueued for deletion", extra={"key_arn": arn})
        except queue.Full:
            self._log.error("Failed to enqueue key for deletion", extra={"key_arn": arn})

    def _delete_forever(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stopping.is_set():
            arn = self._deletions.get()
            if arn is None:
                continue
            try:
                self._kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=PENDING_WINDOW_DAYS)
            except (BotoCoreError, ClientError) as err:
                if error_code(err) in _FINAL_DELETION_ERRORS:
                    self._log.error(
                        "Failed to schedule key deletion", extra={"key_arn": arn, "reason": error_code(err)}
                    )
                    continue
                self._log.error(
                    "It was not possible to schedule key for deletion", extra={"key_arn": arn, "reason": str(err)}
                )
                self.schedule_deletion(arn)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self._log.debug("Key scheduled for deletion", extra={"key_arn": arn})
            backoff = _BACKOFF_MIN

    def _tidy_forever(self) -> None:
        tasks: list[tuple[timedelta, Callable[[], None]]] = [
            (REFRESH_ALIASES_EVERY, self.refresh_aliases),
            (DISPOSE_ALIASES_EVERY, lambda: self.dispose_stale_aliases(datetime.now(UTC))),
            (DISPOSE_KEYS_EVERY, lambda: self.dispose_orphaned_keys(datetime.now(UTC))),
        ]
        start = datetime.now(UTC)
        due = [start + period for period, _ in tasks]
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
                        self._log.error("KMS upkeep failed", extra={"reason": f"{type(err).__name__}: {err}"})

    def refresh_aliases(self) -> None:
        """Touch every alias of this server that still names the key this server uses."""
        self._log.debug("Refreshing aliases")
        for entry in list(self._entries()):
            try:
                current = self._kms.describe_key(KeyId=entry.alias)["KeyMetadata"]["Arn"]
                if current != entry.arn:
                    self._log.warning(
                        "Alias target differs from cache, skipping refresh to avoid reverting a rotation",
                        extra={"alias_name": entry.alias, "cached_arn": entry.arn, "current_arn": current},
                    )
                    continue
                self._kms.update_alias(AliasName=entry.alias, TargetKeyId=entry.arn)
            except (BotoCoreError, ClientError) as err:
                self._log.error("Failed to refresh alias", extra={"alias_name": entry.alias, "reason": str(err)})

    def dispose_stale_aliases(self, now: datetime) -> None:
        """Delete other servers' aliases of the trust domain untouched for two weeks, and their keys."""
        self._log.debug("Looking for aliases in trust domain to dispose")
        for page in self._kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 100}):
            for alias in page.get("Aliases", []):
                name, arn, updated = alias.get("AliasName"), alias.get("AliasArn"), alias.get("LastUpdatedDate")
                if not (name and arn and updated):
                    continue
                if not name.startswith(self._names.trust_domain_alias_prefix):
                    continue
                if name.startswith(self._names.server_alias_prefix):
                    continue
                if now - updated < STALE_ALIAS_AGE:
                    continue
                try:
                    metadata = self._kms.describe_key(KeyId=arn)["KeyMetadata"]
                    if not metadata.get("Enabled"):
                        continue
                    self._kms.delete_alias(AliasName=name)
                except (BotoCoreError, ClientError) as err:
                    self._log.error("Failed to clean up old KMS keys", extra={"alias_name": name, "reason": str(err)})
                    continue
                self._log.debug("Deleted stale alias", extra={"alias_name": name})
                self.schedule_deletion(metadata["Arn"])

    def dispose_orphaned_keys(self, now: datetime) -> None:
        """Delete keys of the trust domain without an alias, once they are 48 hours old."""
        self._log.debug("Looking for keys in trust domain to dispose")
        for page in self._kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 1000}):
            for key in page.get("Keys", []):
                arn = key.get("KeyArn")
                if not arn:
                    continue
                try:
                    metadata = self._kms.describe_key(KeyId=arn)["KeyMetadata"]
                    description, created = metadata.get("Description", ""), metadata.get("CreationDate")
                    if not metadata.get("Enabled") or created is None:
                        continue
                    if not description.startswith(self._names.trust_domain_description_prefix):
                        continue
                    if self._kms.list_aliases(KeyId=arn, Limit=1).get("Aliases"):
                        continue
                except (BotoCoreError, ClientError) as err:
                    self._log.error("Failed to describe key to dispose", extra={"key_arn": arn, "reason": str(err)})
                    continue
                if now - created < ORPHANED_KEY_AGE:
                    continue
                self._log.debug("Found key in trust domain beyond threshold", extra={"key_arn": arn})
                self.schedule_deletion(metadata["Arn"])
