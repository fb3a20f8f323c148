"""This server's bundle, handed to the Notifier and BundlePublisher plugins as SPIRE hands it.

- Notifiers hear "bundle loaded" once at start-up, with the bundle the CA has just prepared;
  a notifier that fails it fails the start (SPIRE's ``NotifyAndAdviseBundleLoaded``). After
  that they hear "bundle updated" after each change of the bundle (a failure is logged as a
  warning; the change stands).
- Publishers are called at start, after each change, and every ``REPUBLISH_INTERVAL``
  (SPIRE's pubmanager: 30 s) whether or not it changed, so a publish that failed is tried
  again and a store that lost the bundle gets it back. A failure is logged as an error.

A change is any change of this trust domain's bundle in the datastore (this server's CA, a
server sharing the database, the local authority API), seen through the bundle cache. Every
plugin of a kind is called in parallel, in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import BundlePublisher, Notifier
from pyspire.plugin.records import BundleRecord
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.federation.documents import record_to_bundle
from pyspire.spiffe import Bundle, TrustDomain

__all__ = ["REPUBLISH_INTERVAL", "BundleDelivery", "BundleLoadedRefused"]

_log = logging.getLogger(__name__)

REPUBLISH_INTERVAL = 30.0


class BundleLoadedRefused(PluginError):
    """A Notifier failed the "bundle loaded" notification: the server must not start."""


class BundleDelivery:
    """Keeps Notifier and BundlePublisher plugins told about the server's own bundle."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        bundles: BundleCache,
        notifiers: Sequence[Notifier],
        publishers: Sequence[BundlePublisher],
        *,
        republish_interval: float = REPUBLISH_INTERVAL,
    ) -> None:
        """Deliver ``trust_domain``'s bundle from ``bundles`` to the plugins."""
        self._trust_domain = trust_domain
        self._bundles = bundles
        self._notifiers = tuple(notifiers)
        self._publishers = tuple(publishers)
        self._republish_interval = republish_interval
        self._changed = asyncio.Event()
        self._notified: BundleRecord | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Notify "bundle loaded" (raises BundleLoadedRefused), publish, then follow changes."""
        if not (self._notifiers or self._publishers):
            return
        loop = asyncio.get_running_loop()
        self._bundles.subscribe(lambda trust_domain: self._on_change(loop, trust_domain))
        record = self._current()
        if record is None:
            raise BundleLoadedRefused(f"the bundle of {self._trust_domain} is missing from the datastore")
        # What changed while the CA was starting is part of what "loaded" reports.
        self._notified = record
        loaded = [(n.name, n.notify_bundle_loaded) for n in self._notifiers if n.implements("notify_bundle_loaded")]
        failures = await self._each(loaded, record, "bundle loaded")
        if failures:
            raise BundleLoadedRefused(f"a notifier failed the bundle loaded event: {'; '.join(failures)}")
        await self._each([(p.name, p.publish_bundle) for p in self._publishers], record, "publish bundle")
        self._task = asyncio.create_task(self._follow(), name="pyspire-bundle-delivery")

    async def stop(self) -> None:
        """Stop following changes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_change(self, loop: asyncio.AbstractEventLoop, trust_domain: TrustDomain) -> None:
        if trust_domain == self._trust_domain:
            loop.call_soon_threadsafe(self._changed.set)

    def _current(self) -> BundleRecord | None:
        return self._bundles.get(self._trust_domain)

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._republish_interval)
            self._changed.clear()
            record = self._current()
            if record is None:
                continue
            if record != self._notified:
                self._notified = record
                await self._each([(n.name, n.notify_bundle_updated) for n in self._notifiers], record, "bundle updated")
            await self._each([(p.name, p.publish_bundle) for p in self._publishers], record, "publish bundle")

    async def _each(
        self, calls: Sequence[tuple[str, Callable[[Bundle], None]]], record: BundleRecord, event: str
    ) -> list[str]:
        """Hand every plugin the bundle, in parallel; the failures, each logged."""
        bundle = record_to_bundle(record)

        async def one(name: str, call: Callable[[Bundle], None]) -> str | None:
            try:
                await asyncio.to_thread(call, bundle)
            except PluginError as err:
                level = logging.WARNING if event == "bundle updated" else logging.ERROR
                message = "Failed to publish bundle" if event == "publish bundle" else "Notifier failed to handle event"
                _log.log(level, message, extra={"plugin": name, "event": event, "error": str(err)})
                return str(err)
            _log.debug("Bundle delivered", extra={"plugin": name, "event": event})
            return None

        results = await asyncio.gather(*(one(name, call) for name, call in calls))
        return [failure for failure in results if failure is not None]
