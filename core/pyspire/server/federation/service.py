"""The server's federation side as one part the daemon starts and stops.

It owns the bundle endpoint (when ``federation.bundle_endpoint`` is configured), the TLS
identity it serves with, and the refresher of partners' bundles (always running: the
TrustDomain API may add relationships at any time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pyspire.config.sections import BundleEndpoint, Federation
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import FederationRelationship
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.endpoints import ListenError
from pyspire.server.federation.documents import record_to_bundle
from pyspire.server.federation.endpoint import BundleEndpointServer, load_serving_certificate
from pyspire.server.federation.refresher import BundleRefresher
from pyspire.server.server_svid import ServerSvid
from pyspire.spiffe import Bundle, TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.transport import ServerTlsContexts

__all__ = ["FederationService", "static_relationships"]

_log = logging.getLogger(__name__)


def static_relationships(federation: Federation) -> dict[TrustDomain, FederationRelationship]:
    """The config's ``federates_with`` blocks as relationships."""
    found = {}
    for trust_domain, partner in federation.federates_with.items():
        spiffe = partner.bundle_endpoint_profile.https_spiffe
        found[trust_domain] = FederationRelationship(
            trust_domain,
            partner.bundle_endpoint_url,
            "https_spiffe" if spiffe is not None else "https_web",
            spiffe.endpoint_spiffe_id if spiffe is not None else None,
        )
    return found


class FederationService:
    """Bundle endpoint + bundle refresher."""

    def __init__(
        self,
        federation: Federation,
        trust_domain: TrustDomain,
        datastore: DataStore,
        bundles: BundleCache,
        *,
        server_svid: ServerSvid,
        wrote: Callable[[], Awaitable[None]],
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._config = federation.bundle_endpoint
        self._trust_domain = trust_domain
        self._bundles = bundles
        self._server_svid = server_svid
        self.refresher = BundleRefresher(datastore, bundles, static_relationships(federation), wrote, metrics=metrics)
        self.endpoint: BundleEndpointServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.refresher.run(), name="pyspire-federation-refresher"))
        if self._config is None:
            return
        tls = ServerTlsContexts(alpn=("http/1.1",), client_certificates=False)
        web = self._config.profile.https_web
        if web is not None and web.serving_cert_file is not None:
            files = web.serving_cert_file
            try:
                tls.update(*load_serving_certificate(files.cert_file_path, files.key_file_path))
            except (OSError, ValueError) as err:
                raise ListenError(f"federation.bundle_endpoint: cannot use serving_cert_file: {err}") from None
            self._tasks.append(
                asyncio.create_task(self._reload_files(tls, self._config), name="pyspire-bundle-endpoint-certificate")
            )
        else:
            tls.update(self._server_svid.chain, self._server_svid.private_key)
            self._server_svid.subscribe(lambda: tls.update(self._server_svid.chain, self._server_svid.private_key))
        self.endpoint = BundleEndpointServer(self._config.address, self._config.port, tls, self._current_bundle)
        await self.endpoint.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.endpoint is not None:
            await self.endpoint.stop()

    def _current_bundle(self) -> Bundle | None:
        record = self._bundles.get(self._trust_domain)
        if record is None or self._config is None:
            return None
        return record_to_bundle(record, refresh_hint=self._config.refresh_hint)

    async def _reload_files(self, tls: ServerTlsContexts, config: BundleEndpoint) -> None:
        files = config.profile.https_web.serving_cert_file  # type: ignore[union-attr]
        assert files is not None
        while True:
            await asyncio.sleep(files.file_sync_interval.total_seconds())
            try:
                tls.update(*load_serving_certificate(files.cert_file_path, files.key_file_path))
            except (OSError, ValueError) as err:
                _log.warning("Keeping the bundle endpoint's certificate; the files cannot be read: %s", err)
