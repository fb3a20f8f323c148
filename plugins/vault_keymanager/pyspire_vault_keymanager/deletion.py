"""Deleting the keys a rotation replaced, in the background, retrying until Vault agrees.

A replaced key is deleted only after its successor is in use, so a failure here never
stops the server signing; it leaves a key behind, which the next start finds (two keys for
one slot: the older is deleted then). Transit keys refuse deletion until their
``deletion_allowed`` is set, so each deletion is two calls.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from pyspire.plugin import PluginError, PluginLogger

__all__ = ["Deleter"]

_QUEUE_SIZE = 120
_BACKOFF_MIN = 1.0
_BACKOFF_MAX = 60.0


class Deleter:
    """One worker thread that runs ``delete(name)`` for each queued key name."""

    def __init__(self, delete: Callable[[str], None], log: PluginLogger) -> None:
        self._delete = delete
        self._log = log
        self._queue: queue.Queue[str | None] = queue.Queue(_QUEUE_SIZE)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hashicorp_vault-deletion", daemon=True)
        self._thread.start()

    def schedule(self, name: str) -> None:
        """Queue ``name``; a full queue is logged and the key left for the next start to find."""
        try:
            self._queue.put_nowait(name)
            self._log.debug("Key enqueued for deletion", extra={"key_name": name})
        except queue.Full:
            self._log.error("Failed to enqueue key for deletion", extra={"key_name": name})

    def stop(self) -> None:
        """Try each deletion still queued once more, then end (waiting 15 s at most)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            name = self._queue.get()
            if name is None:
                return
            try:
                self._delete(name)
            except PluginError as err:
                self._log.error(
                    "It was not possible to delete the key; trying again later",
                    extra={"key_name": name, "reason": str(err)},
                )
                if not self._stopping.is_set():
                    self.schedule(name)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self._log.debug("Key deleted", extra={"key_name": name})
            backoff = _BACKOFF_MIN
