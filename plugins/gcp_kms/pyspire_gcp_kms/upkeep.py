"""Keeping the key ring tidy as SPIRE's ``gcp_kms`` does: keys in use say so, stale ones are disposed of.

- Every 6 hours each CryptoKey this server uses gets its ``spire-last-update`` label set to the
  current Unix time: that is how other servers of the trust domain see the key is still in use.
- Every 48 hours, CryptoKeys of the trust domain that belong to another server, are still
  labelled active and were not refreshed for two weeks have their enabled versions scheduled
  for destruction; one with no enabled version left is labelled ``spire-active = false``, so no
  later sweep (nor a server restarting with that ID) finds it again.

Both rounds take ``now`` so tests can run them at any time; the thread's periods are
parameters for the same reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2
from pyspire.plugin import PluginLogger

__all__ = ["DISPOSE_EVERY", "KEEP_ACTIVE_EVERY", "LABEL_LAST_UPDATE", "MAX_STALE", "Upkeep"]

KEEP_ACTIVE_EVERY = timedelta(hours=6)
DISPOSE_EVERY = timedelta(hours=48)
MAX_STALE = timedelta(days=14)
LABEL_LAST_UPDATE = "spire-last-update"


class Upkeep:
    """The periodic work of one configured plugin; ``stop`` ends it.

    ``client`` is the Cloud KMS client, ``crypto_keys`` the names of the CryptoKeys this server
    uses now, ``destroy`` schedules one CryptoKeyVersion for destruction (logging failures),
    ``errors`` the exceptions a Cloud KMS call may raise.
    """

    def __init__(
        self,
        client: Any,
        key_ring: str,
        *,
        labels: dict[str, str],
        crypto_keys: Callable[[], Iterable[str]],
        destroy: Callable[[str], None],
        errors: tuple[type[Exception], ...],
        log: PluginLogger,
        keep_active_every: timedelta = KEEP_ACTIVE_EVERY,
        dispose_every: timedelta = DISPOSE_EVERY,
    ) -> None:
        self._client = client
        self._key_ring = key_ring
        self._labels = labels
        self._crypto_keys = crypto_keys
        self._destroy = destroy
        self._errors = errors
        self._log = log
        self._periods = (keep_active_every, dispose_every)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gcp_kms-upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def keep_active(self, now: datetime) -> None:
        """Set ``spire-last-update`` on every CryptoKey in use; a failure is logged, the rest still done."""
        self._log.debug("Keeping CryptoKeys managed by this server active")
        stamp = str(int(now.timestamp()))
        for name in list(self._crypto_keys()):
            try:
                current = self._client.get_crypto_key(request={"name": name})
                labels = {**current.labels, LABEL_LAST_UPDATE: stamp}
                self._update_labels(name, labels)
            except self._errors as err:
                self._log.error("Failed to update CryptoKey", extra={"crypto_key_name": name, "reason": str(err)})

    def dispose_stale(self, now: datetime) -> None:
        """Destroy the enabled versions of other servers' CryptoKeys not refreshed for ``MAX_STALE``."""
        self._log.debug("Looking for CryptoKeys to dispose")
        query = (
            f"labels.spire-server-td = {self._labels['spire-server-td']}"
            f" AND labels.spire-server-id != {self._labels['spire-server-id']}"
            f" AND labels.spire-active = true"
            f" AND labels.{LABEL_LAST_UPDATE} < {int((now - MAX_STALE).timestamp())}"
        )
        try:
            stale = list(self._client.list_crypto_keys(request={"parent": self._key_ring, "filter": query}))
        except self._errors as err:
            self._log.error("Failure listing CryptoKeys to dispose", extra={"reason": str(err)})
            return
        for crypto_key in stale:
            try:
                versions = list(
                    self._client.list_crypto_key_versions(
                        request={"parent": crypto_key.name, "filter": "state = ENABLED"}
                    )
                )
            except self._errors as err:
                self._log.error("Failure listing CryptoKeyVersions", extra={"reason": str(err)})
                continue
            if not versions:
                self._set_inactive(crypto_key.name, dict(crypto_key.labels))
            for version in versions:
                self._destroy(version.name)

    def _set_inactive(self, name: str, labels: dict[str, str]) -> None:
        try:
            self._update_labels(name, {**labels, "spire-active": "false"})
            self._log.debug("CryptoKey updated as inactive", extra={"crypto_key_name": name})
        except self._errors as err:
            self._log.error(
                "Could not update CryptoKey as inactive", extra={"crypto_key_name": name, "reason": str(err)}
            )

    def _update_labels(self, name: str, labels: dict[str, str]) -> None:
        self._client.update_crypto_key(
            request={
                "crypto_key": {"name": name, "labels": labels},
                "update_mask": field_mask_pb2.FieldMask(paths=["labels"]),
            }
        )

    def _run(self) -> None:
        tasks: list[Callable[[datetime], None]] = [self.keep_active, self.dispose_stale]
        now = datetime.now(UTC)
        due = [now + period for period in self._periods]
        while True:
            wait = max(0.0, (min(due) - datetime.now(UTC)).total_seconds())
            if self._stopping.wait(wait):
                return
            now = datetime.now(UTC)
            for index, task in enumerate(tasks):
                if due[index] <= now:
                    due[index] = now + self._periods[index]
                    try:
                        task(now)
                    except Exception as err:  # a malformed answer must not end the upkeep: the next round still comes
                        self._log.error("Cloud KMS upkeep failed", extra={"reason": f"{type(err).__name__}: {err}"})
