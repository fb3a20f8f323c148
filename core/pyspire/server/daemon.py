"""``pyspire-server run``: start every part in order, keep them turning, stop cleanly.

Order: logging, plugins (the catalog), the CA (resumed from its journal or created), the
caches (one full load, then change events), the server's own SVID and TLS contexts, the
endpoints, and the health and metrics listeners. Then background loops rotate authorities
and the server SVID and prune what expired, until SIGTERM or SIGINT stops everything in
reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from pyspire.config import ServerConfig
from pyspire.config.sections import ServerSection
from pyspire.lifecycle import serve_until_stopped
from pyspire.listening import AcceptExhaustionLog
from pyspire.plugin.builtin.key_managers import signs_in_process
from pyspire.plugin.catalog import ServerCatalog, load_server_catalog
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError
from pyspire.plugin.keys import KeyType
from pyspire.plugin.reconfigure import report_plugin_data_changes
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.server.api.audit import AuditLog
from pyspire.server.api.ratelimit import RateLimits
from pyspire.server.bundle_delivery import BundleDelivery
from pyspire.server.ca.authority import CaManager, CaSettings, ca_subject_name
from pyspire.server.ca.issuer import CredentialIssuer
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.cache.entries import EntryIndex
from pyspire.server.cache.follower import StateFollower
from pyspire.server.cache.nodes import NodeCache
from pyspire.server.context import ServerContext
from pyspire.server.csr_verifier import CsrVerifier
from pyspire.server.datastore_health import DatastoreHealth
from pyspire.server.endpoints import Endpoints, ListenError
from pyspire.server.federation.service import FederationService
from pyspire.server.server_svid import ServerSvid
from pyspire.server.work import WorkPools
from pyspire.signals import handle_signals
from pyspire.spiffe import SpiffeId
from pyspire.telemetry.health import CheckResult, GrpcHealth, HealthChecker, HealthListener
from pyspire.telemetry.plugins import PluginObserver
from pyspire.telemetry.runtime import TelemetryError, TelemetryRuntime
from pyspire.transport import ServerTlsContexts

__all__ = ["ServerDaemon", "run_server"]

_log = logging.getLogger("pyspire.server")

ROTATION_INTERVAL = 10.0
PRUNE_INTERVAL = 300.0
FAILED_ROTATION_THRESHOLD = 10  # SPIRE's: more failed rotations in a row and the CA is unhealthy
_HEALTH_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def _signs_quickly(section: ServerSection, catalog: ServerCatalog) -> bool:
    """Whether one signature can be made on the event loop (see :class:`~pyspire.server.work.WorkPools`)."""
    ec_keys = section.ca_key_type.startswith("ec-") and section.effective_jwt_key_type.startswith("ec-")
    return ec_keys and signs_in_process(catalog.key_manager.instance) and not catalog.credential_composers


class ServerDaemon:
    """The running server."""

    def __init__(self, config: ServerConfig) -> None:
        """A server for ``config`` (nothing runs until :meth:`start`)."""
        self.config = config
        self.ctx: ServerContext | None = None
        self._catalog: ServerCatalog | None = None
        self._endpoints: Endpoints | None = None
        self._federation: FederationService | None = None
        self._delivery: BundleDelivery | None = None
        self._health: HealthListener | None = None
        self._checker = HealthChecker()
        self.grpc_health = GrpcHealth(self._bundle_in_datastore)
        self.telemetry: TelemetryRuntime | None = None
        self._failed_rotations = 0
        self._settled_at = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Bring every part up; raises if one cannot start (what started is stopped again)."""
        config = self.config
        section = config.server
        AcceptExhaustionLog().install(asyncio.get_running_loop())
        for warning in config.warnings:
            _log.warning(warning)
        section.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # As SPIRE: metrics first, so everything after is counted.
        self.telemetry = telemetry = TelemetryRuntime("spire_server", config.telemetry, section.trust_domain.name)
        await telemetry.start()
        metrics = telemetry.metrics
        core = CoreConfig(trust_domain=section.trust_domain, data_dir=section.data_dir)
        source = config.source.name if config.source else "config"
        self._catalog = catalog = await asyncio.to_thread(load_server_catalog, config.plugins, core, source=source)
        catalog.instrument(PluginObserver(metrics, "server"))
        datastore_health = DatastoreHealth(catalog.datastore, section.trust_domain)

        settings = CaSettings(
            trust_domain=section.trust_domain,
            ca_ttl=section.ca_ttl,
            ca_key_type=KeyType.parse(section.ca_key_type),
            jwt_key_type=KeyType.parse(section.effective_jwt_key_type),
            ca_subject=ca_subject_name(
                section.ca_subject.country, section.ca_subject.organization, section.ca_subject.common_name
            ),
            disable_jwt_svids=section.disable_jwt_svids,
        )
        authority = CaManager(
            settings, catalog.key_manager, catalog.datastore, catalog.upstream_authority, metrics=metrics
        )
        await asyncio.to_thread(authority.start)
        issuer = CredentialIssuer(
            section.trust_domain,
            authority.active_x509,
            authority.active_jwt,
            jwt_issuer=section.jwt_issuer,
            composers=catalog.credential_composers,
            metrics=metrics,
        )

        entries, nodes, bundles = EntryIndex(section.server_id), NodeCache(), BundleCache()
        follower = StateFollower(
            catalog.datastore,
            entries,
            nodes,
            bundles,
            poll_interval=min(section.experimental.cache_reload_interval.total_seconds(), 1.0),
            metrics=metrics,
            full_reload_interval=section.experimental.full_cache_reload_interval.total_seconds(),
        )
        await follower.start()

        server_svid = ServerSvid(issuer, section.default_x509_svid_ttl, metrics=metrics)
        tls = ServerTlsContexts()

        def refresh_tls() -> None:
            own = bundles.get(section.trust_domain)
            roots = [x509.load_der_x509_certificate(a.der) for a in own.x509_authorities] if own else []
            tls.update(server_svid.chain, server_svid.private_key, roots)

        server_svid.subscribe(refresh_tls)
        bundles.subscribe(
            lambda trust_domain: refresh_tls() if trust_domain == section.trust_domain and server_svid.chain else None
        )

        def renew_server_svid() -> None:
            server_svid.rotate(force=True)

        authority.subscribe(renew_server_svid)
        await asyncio.to_thread(server_svid.rotate, force=True)

        self.ctx = ctx = ServerContext(
            config=config,
            catalog=catalog,
            authority=authority,
            issuer=issuer,
            entries=entries,
            nodes=nodes,
            bundles=bundles,
            follower=follower,
            server_svid=server_svid,
            datastore_health=datastore_health,
            rate_limits=RateLimits(attestation=section.ratelimit.attestation, signing=section.ratelimit.signing),
            audit=AuditLog(section.audit_log_enabled),
            metrics=metrics,
            csr_verifier=CsrVerifier(),
            pools=WorkPools(inline_signing=_signs_quickly(section, catalog)),
        )
        # Before the API endpoints: once the admin socket answers, everything is up.
        self._federation = FederationService(
            section.federation,
            section.trust_domain,
            catalog.datastore,
            bundles,
            server_svid=server_svid,
            wrote=follower.catch_up,
            metrics=metrics,
        )
        ctx.refresher = self._federation.refresher
        await self._federation.start()
        self._delivery = BundleDelivery(section.trust_domain, bundles, catalog.notifiers, catalog.bundle_publishers)
        await self._delivery.start()
        self._endpoints = Endpoints(ctx, tls, self.grpc_health)
        await self._endpoints.start()
        self._add_health_checks(ctx)
        self._checker.start()
        health = config.health_checks
        if health.listener_enabled:
            self._health = HealthListener(
                self._checker, health.bind_address, health.bind_port, health.live_path, health.ready_path
            )
            await self._health.start()
        settle_heap()
        self._settled_at = len(ctx.entries) + len(ctx.nodes)
        self._tasks = [
            asyncio.create_task(self._rotate_forever(), name="pyspire-rotation"),
            asyncio.create_task(self._prune_forever(), name="pyspire-pruning"),
        ]
        _log.info("Server started", extra={"trust_domain": str(section.trust_domain)})

    def reconfigure(self) -> None:
        """SIGUSR1: report changed plugin data files as SPIRE's reconfigurer sees them; dump an InMem sink."""
        report_plugin_data_changes(self.config.plugins)
        if self.telemetry is not None:
            self.telemetry.dump_inmem()

    def _add_health_checks(self, ctx: ServerContext) -> None:
        """SPIRE's four server checks, under SPIRE's names and detail keys."""
        socket_path = str(ctx.config.server.socket_path)
        health_id = SpiffeId.from_path(ctx.trust_domain, "/for/health/check/only")

        async def server() -> CheckResult:
            # The API is served only once the CA is up: fetching the bundle through it says both.
            channel = Channel(path=socket_path)
            try:
                await bundle_grpc.BundleStub(channel).GetBundle(bundle_pb2.GetBundleRequest(), timeout=10)
                error = None
            except (GRPCError, OSError, TimeoutError) as err:
                error = f"unable to fetch bundle: {err}"
            finally:
                channel.close()
            return CheckResult.of("get_bundle_err", error)

        async def datastore() -> CheckResult:
            try:
                await asyncio.to_thread(ctx.datastore.list_bundles)
            except PluginError as err:
                return CheckResult.of("list_bundle_err", str(err))
            await asyncio.to_thread(ctx.datastore_health.probe_write)
            return CheckResult.of("list_bundle_err", None)

        def datastore_writes() -> CheckResult:
            # pyspire's own: a datastore that reads but refuses writes can attest and register nothing.
            failed = ctx.datastore_health.failed_write
            return CheckResult(True, failed is None, {"write_err": failed} if failed else {})

        async def ca() -> CheckResult:
            try:
                await asyncio.to_thread(
                    ctx.issuer.sign_workload_x509_svid, _HEALTH_KEY, health_id, timedelta(minutes=1)
                )
                return CheckResult.of("sign_x509_svid_err", None)
            except (PluginError, ValueError) as err:
                return CheckResult.of("sign_x509_svid_err", str(err))

        def rotator() -> CheckResult:
            failing = self._failed_rotations > FAILED_ROTATION_THRESHOLD
            return CheckResult.of(
                "rotation_err", "rotations exceed the threshold number of failures" if failing else None
            )

        self._checker.add_check("server", server)
        self._checker.add_check("catalog.datastore", datastore)
        self._checker.add_check("server.ca", ca)
        self._checker.add_instant_check("server.ca.rotator", rotator)
        self._checker.add_instant_check("datastore_writes", datastore_writes)

    async def _bundle_in_datastore(self) -> tuple[bool, str]:
        """gRPC health, as SPIRE's (the own bundle can be read from the datastore), and writes succeed."""
        ctx = self.ctx
        if ctx is None:
            return False, "the server is starting"
        problem = await asyncio.to_thread(ctx.datastore_health.problem)
        return (True, "") if problem is None else (False, problem)

    async def _rotate_forever(self) -> None:
        assert self.ctx is not None
        ctx = self.ctx
        while True:
            await asyncio.sleep(ROTATION_INTERVAL)
            try:
                changed = await asyncio.to_thread(ctx.authority.rotate)
                if changed:
                    await ctx.follower.catch_up()
                await asyncio.to_thread(ctx.server_svid.rotate)
                self._failed_rotations = 0
                cached = len(ctx.entries) + len(ctx.nodes)
                if cached > self._settled_at * 1.1 + 1000:
                    settle_heap()  # the caches grew: take the new objects off the collector too
                    self._settled_at = cached
            except PluginError as err:
                self._failed_rotations += 1
                _log.warning("Rotation step failed; the current authorities keep signing: %s", err)
            except Exception:
                self._failed_rotations += 1
                _log.exception("Rotation step failed; the current authorities keep signing")

    async def _prune_forever(self) -> None:
        assert self.ctx is not None
        ctx = self.ctx
        section = self.config.server
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            now = int(time.time())
            try:
                await ctx.call(ctx.datastore.prune_join_tokens, now)
                with ctx.metrics.call("registration_entry", "manager", "prune"):
                    await ctx.call(ctx.datastore.prune_registration_entries, now)
                await ctx.call(
                    ctx.datastore.prune_change_events,
                    now - int(section.experimental.prune_events_older_than.total_seconds()),
                )
                if section.prune_attested_nodes_expired_for is not None:
                    cutoff = now - int(section.prune_attested_nodes_expired_for.total_seconds())
                    with ctx.metrics.call("node", "manager", "prune"):
                        await ctx.call(ctx.datastore.prune_attested_nodes, cutoff, section.prune_tofu_nodes)
            except Exception:
                _log.exception("Pruning failed; it is retried later")

    async def stop(self) -> None:
        """Stop everything that started, in reverse order."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._health is not None:
            await self._health.stop()
        await self._checker.stop()
        if self._endpoints is not None:
            await self._endpoints.stop()
        if self._federation is not None:
            await self._federation.stop()
        if self._delivery is not None:
            await self._delivery.stop()
        if self.ctx is not None:
            await self.ctx.follower.stop()
            await self.ctx.csr_verifier.aclose()
            self.ctx.pools.close()
        if self._catalog is not None:
            self._catalog.close()
        if self.telemetry is not None:
            await self.telemetry.stop()
        _log.info("Server stopped")


def settle_heap() -> None:
    """Keep the garbage collector off the long-lived caches.

    The entry and node caches are hundreds of thousands of objects that live as long as the
    process; without this every full collection walks all of them, which costs more than the
    signing it interrupts. Objects allocated later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


async def _serve(config: ServerConfig) -> int:
    daemon = ServerDaemon(config)
    with handle_signals(daemon.reconfigure) as stop:
        # A plugin that cannot do its part at start (an upstream CA out of reach, say) is an
        # operator's problem to fix, reported in its own words, not a crash.
        return await serve_until_stopped(
            daemon, stop, name="Server", log=_log, refusals=(ListenError, OSError, PluginError, TelemetryError)
        )


def run_server(config: ServerConfig) -> int:
    """Run the server until a signal stops it; the exit code."""
    return asyncio.run(_serve(config))
