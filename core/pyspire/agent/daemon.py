"""``pyspire-agent run``: the agent's parts, started and stopped in order.

Start: plugins, the saved identity or node attestation (retried while the server is
unreachable), the first sync, then the socket serving the Workload API and Envoy SDS (0777 in
its directory, as SPIRE: any local process may ask, and attestation decides what it gets) and
the health listener.
Stop (SIGTERM/SIGINT): streams end with UNAVAILABLE, the socket is removed, plugins closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.admin_api import AgentDebugService, AgentLoggerService
from pyspire.agent.bootstrap import BootstrapGauges, StartupError, check_before_start, read_trust_bundle
from pyspire.agent.cache import WorkloadCache
from pyspire.agent.client import ServerClient, ServerNotTrusted, ServerUnavailable, UnusableAnswer
from pyspire.agent.delegated_identity import DelegatedIdentityService
from pyspire.agent.jwt_svids import JwtSvidIssuer
from pyspire.agent.manager import AgentStopped, SyncManager
from pyspire.agent.node import NodeError, NodeIdentityManager
from pyspire.agent.sds import SecretDiscoveryService
from pyspire.agent.serving import CallerAttestor, OpenStreams
from pyspire.agent.svid_store import StoredSvids
from pyspire.agent.workload_api import WorkloadApiService
from pyspire.backoff import Backoff, attestation_backoff, transient_status
from pyspire.config.daemon_config import AgentConfig
from pyspire.files import ensure_private_dir
from pyspire.lifecycle import serve_until_stopped
from pyspire.listening import AcceptExhaustionLog
from pyspire.plugin.catalog import AgentCatalog, load_agent_catalog
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.reconfigure import report_plugin_data_changes
from pyspire.signals import handle_signals
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError
from pyspire.telemetry.health import CheckResult, GrpcHealth, HealthChecker, HealthListener
from pyspire.telemetry.metrics import NO_METRICS
from pyspire.telemetry.plugins import PluginObserver
from pyspire.telemetry.rpc import instrument
from pyspire.telemetry.runtime import TelemetryError, TelemetryRuntime
from pyspire.transport import GrpcServer, unix_socket_in_use

__all__ = ["AgentDaemon", "run_agent"]

_log = logging.getLogger(__name__)


class AgentDaemon:
    """One agent: identity, sync loop, Workload API."""

    def __init__(self, config: AgentConfig) -> None:
        """Prepare an agent for ``config`` (nothing starts until :meth:`start`)."""
        self.config = config
        self._catalog: AgentCatalog | None = None
        self._client: ServerClient | None = None
        self.node: NodeIdentityManager | None = None
        self.cache: WorkloadCache | None = None
        self.manager: SyncManager | None = None
        self._streams: OpenStreams | None = None
        self._server: GrpcServer | None = None
        self._socket_bound = False
        self._admin: GrpcServer | None = None
        self._admin_path: Path | None = None
        self._health: HealthListener | None = None
        self._checker = HealthChecker()
        self._checker.add_check("agent", self._agent_check)
        self._checker.add_instant_check("agent_svid_saved", self._saved_check)
        self.grpc_health = GrpcHealth(self._workload_api_serving)
        self.started = False
        self.telemetry: TelemetryRuntime | None = None
        self._store_task: asyncio.Task[None] | None = None
        self.sync_task: asyncio.Task[None] | None = None
        self._bootstrapped = False
        """Whether the server is verified with the bootstrap bundle (none was saved from it yet)."""

    # --- bootstrap trust -------------------------------------------------------------

    def _bootstrap_roots(self) -> tuple[tuple[x509.Certificate, ...], bool]:
        section = self.config.agent
        roots = read_trust_bundle(section)
        if roots:
            return roots, True
        _log.warning("insecure_bootstrap is set: the first server reached is trusted without verification")
        return (), False

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bring the agent up; raises StartupError/AgentStopped when it cannot."""
        config = self.config
        section = config.agent
        AcceptExhaustionLog().install(asyncio.get_running_loop())
        for warning in config.warnings:
            _log.warning(warning)
        check_before_start(section, read_bundle_file=False)
        data_dir = Path(section.data_dir)
        ensure_private_dir(data_dir)
        # As SPIRE: metrics first; health from the start (live, not ready, while attesting).
        self.telemetry = telemetry = TelemetryRuntime("spire_agent", config.telemetry, section.trust_domain.name)
        await telemetry.start()
        metrics = telemetry.metrics
        await self._start_health()
        core = CoreConfig(trust_domain=section.trust_domain, data_dir=data_dir)
        source = config.source.name if config.source else "config"
        self._catalog = catalog = await asyncio.to_thread(load_agent_catalog, config.plugins, core, source=source)
        catalog.instrument(PluginObserver(metrics, "agent"))
        self._client = client = ServerClient(section.servers, section.trust_domain)
        self.node = node = NodeIdentityManager(section, catalog, client, metrics)

        has_identity = await asyncio.to_thread(node.load)
        if node.roots:
            client.set_roots(node.roots)
        else:
            roots, verify = self._bootstrap_roots()
            node.roots = roots
            client.set_roots(roots, verify=verify)
            self._bootstrapped = True
        gauges = BootstrapGauges(metrics)
        if not has_identity:
            await self._attest_with_retries(node, gauges)
        gauges.bootstrapped()
        if not node.roots:
            await self._pin_bundle(client, node)

        self.cache = cache = WorkloadCache(
            section.trust_domain,
            section.x509_svid_cache_max_size,
            section.jwt_svid_cache_max_size,
            section.availability_target,
        )
        stored = StoredSvids(section.trust_domain, catalog.svid_stores, section.availability_target, metrics)
        self.manager = manager = SyncManager(
            node,
            client,
            cache,
            sync_interval=section.experimental.sync_interval.total_seconds(),
            workload_key_type=section.workload_x509_svid_key_type,
            metrics=metrics,
            use_sync_authorized_entries=section.experimental.sync_authorized_entries,
            stored=stored,
        )
        await self._first_sync(manager)
        self.sync_task = asyncio.create_task(manager.run(synced=True), name="pyspire-agent-sync")
        self._store_task = asyncio.create_task(stored.run(), name="pyspire-agent-svid-store")
        self._streams = OpenStreams(cache)
        caller = CallerAttestor(catalog.workload_attestors, metrics)
        issuer = JwtSvidIssuer(cache, client)
        if not (section.disable_workload_api and section.disable_sds_api):
            await self._serve_workload_api(caller, issuer)
        if section.admin_socket_path is not None:
            delegated = DelegatedIdentityService(self._streams, caller, issuer, section.authorized_delegate_ids)
            await self._serve_admin_api(Path(section.admin_socket_path), node, cache, manager, delegated)
        self.started = True
        _log.info("Agent started", extra={"trust_domain": section.trust_domain.name})

    async def _start_health(self) -> None:
        self._checker.start()
        health = self.config.health_checks
        if health.listener_enabled:
            self._health = HealthListener(
                self._checker, health.bind_address, health.bind_port, health.live_path, health.ready_path
            )
            try:
                await self._health.start()
            except OSError as err:
                raise StartupError(
                    f"health_checks: cannot listen on {health.bind_address}:{health.bind_port}: {err.strerror or err}"
                ) from None

    async def _fetch_own_bundles(self) -> BaseException | None:
        """FetchX509Bundles on the agent's own socket, as a workload would: the error, or None."""
        try:
            async with WorkloadApiClient(f"unix://{self.config.agent.socket_path}", timeout=10) as client:
                await client.fetch_x509_bundles()
        except (WorkloadApiError, OSError, TimeoutError) as err:
            return err.__cause__ if isinstance(err.__cause__, GRPCError) else err
        return None

    async def _agent_check(self) -> CheckResult:
        """SPIRE's "agent" check: the Workload API answers (anything but UNAVAILABLE)."""
        error = await self._fetch_own_bundles()
        unavailable = error is not None and not (
            isinstance(error, GRPCError) and error.status is not Status.UNAVAILABLE
        )
        details = {"make_new_x509_err": "workload api is unavailable"} if unavailable else {}
        return CheckResult(
            live=not self.started or not unavailable,
            ready=not unavailable,
            details=details,
            live_details=details if self.started else {},
        )

    def _saved_check(self) -> CheckResult:
        """pyspire's own: the agent SVID in use is saved in data_dir (else a restart would attest again)."""
        unsaved = self.node is not None and self.node.identity is not None and not self.node.saved
        return CheckResult(
            live=True,
            ready=not unsaved,
            details={"save_svid_err": "the agent SVID in use could not be saved in data_dir"} if unsaved else {},
        )

    async def _workload_api_serving(self) -> tuple[bool, str]:
        """gRPC health, as SPIRE's: an X.509 context is fetched, or refused for lack of an entry."""
        try:
            async with WorkloadApiClient(f"unix://{self.config.agent.socket_path}", timeout=10) as client:
                await client.fetch_x509_context()
        except WorkloadApiError as err:
            cause = err.__cause__
            if isinstance(cause, GRPCError) and cause.status is Status.PERMISSION_DENIED:
                return True, ""
            return False, f"unable to fetch X.509 context from Workload API: {err}"
        except (OSError, TimeoutError) as err:
            return False, f"unable to fetch X.509 context from Workload API: {err}"
        return True, ""

    async def _attest_with_retries(self, node: NodeIdentityManager, gauges: BootstrapGauges) -> None:
        """Attest, retrying as SPIRE does while the failure may pass (for about a minute).

        An unreachable server, a server that fails internally (its cloud API is down, say), a
        node attestor that cannot gather its evidence yet, and a server that cannot be trusted
        (its chain or its identity does not match the agent's bundle and trust domain) are
        retried with SPIRE's back-off; when the minute is spent the agent stops with the last
        reason. A refusal of the evidence (invalid, denied, already used) stops the agent at
        once with the server's reason: retrying would not change it.
        """
        backoff = attestation_backoff()
        while True:
            gauges.attempting()
            try:
                await node.attest()
                return
            except ServerNotTrusted as err:
                reason = f"{err}; {self._trust_advice(err)}"
                await self._retry_or_stop(backoff, "The server cannot be trusted; retrying", reason)
                if err.untrusted_chain:
                    await self._reload_bootstrap_bundle(node)
            except ServerUnavailable as err:
                await self._retry_or_stop(backoff, "Cannot reach the server to attest; retrying", str(err))
            except GRPCError as err:
                reason = f"the server refused attestation ({err.status.name}): {err.message}"
                if not transient_status(err.status.value):
                    raise StartupError(reason) from None
                await self._retry_or_stop(backoff, "The server could not complete attestation; retrying", reason)
            except NodeError as err:
                raise StartupError(str(err)) from None

    async def _first_sync(self, manager: SyncManager) -> None:
        """Sync once before serving, retrying as SPIRE does for about a minute.

        SPIRE's agent opens its Workload API only once its manager has synchronized: a
        workload calling the moment the socket appears gets its SVID, not a refusal for an
        identity the agent has not fetched yet. A server unreachable or failing all minute
        stops the agent with the last reason; a ban or a refusal to re-attest stops it at once.
        """
        backoff = attestation_backoff()
        while True:
            try:
                await manager.sync_once()
                return
            except ServerUnavailable as err:
                await self._retry_or_stop(
                    backoff, "Cannot reach the server for the first sync; retrying", str(err), "first sync"
                )
            except GRPCError as err:
                reason = f"the first sync failed ({err.status.name}): {err.message}"
                await self._retry_or_stop(backoff, "The first sync failed; retrying", reason, "first sync")

    @staticmethod
    async def _retry_or_stop(backoff: Backoff, message: str, reason: str, step: str = "node attestation") -> None:
        wait = backoff.next_wait()
        if wait is None:
            raise StartupError(f"no {step} within {backoff.window or 0:.0f} s: {reason}")
        _log.warning(message, extra={"error": reason, "retry_in_seconds": round(wait, 1)})
        await asyncio.sleep(wait)

    def _trust_advice(self, err: ServerNotTrusted) -> str:
        """What to check when the server cannot be trusted, naming the setting that decides it."""
        section = self.config.agent
        advice = []
        if err.untrusted_chain:
            if section.trust_bundle_path is not None:
                source = f"trust_bundle_path ({section.trust_bundle_path})"
            elif section.trust_bundle_url is not None:
                source = f"trust_bundle_url ({section.trust_bundle_url})"
            else:
                source = f"the bundle saved in {section.data_dir}"
            advice.append(f"check that {source} holds the CA bundle of the server of this trust domain")
        if err.wrong_identity:
            advice.append(f'check trust_domain ("{section.trust_domain.name}") and server_address')
        if err.out_of_time:
            advice.append("check this host's clock against the server's")
        return " and ".join(advice)

    async def _reload_bootstrap_bundle(self, node: NodeIdentityManager) -> None:
        """Before retrying a server whose chain did not verify, read trust_bundle_url again.

        As SPIRE does: the URL may serve a newer bundle than the one fetched at start. A
        bundle from a file, or one saved from the server, is kept.
        """
        if self.config.agent.trust_bundle_url is None or self._client is None or not self._bootstrapped:
            return
        try:
            roots, verify = await asyncio.to_thread(self._bootstrap_roots)
        except StartupError as err:
            _log.warning("Cannot fetch the trust bundle again", extra={"error": str(err)})
            return
        node.roots = roots
        self._client.set_roots(roots, verify=verify)

    async def _pin_bundle(self, client: ServerClient, node: NodeIdentityManager) -> None:
        """After an insecure bootstrap, save the server's bundle before anything else.

        From then on the agent verifies the server with it, also after a restart: trust on
        first use happens once, not again because the agent was stopped before its first sync.
        """
        backoff = attestation_backoff()
        while True:
            try:
                bundle, _, _ = await client.bundle()
            except UnusableAnswer as err:
                raise StartupError(str(err)) from None
            except ServerUnavailable as err:
                await self._retry_or_stop(backoff, "Cannot fetch the server's bundle; retrying", str(err))
                continue
            if not bundle.x509_authorities:
                raise StartupError("the server's bundle holds no X.509 authority")
            node.set_roots(bundle.x509_authorities)
            return

    async def _serve_workload_api(self, caller: CallerAttestor, issuer: JwtSvidIssuer) -> None:
        path = Path(self.config.agent.socket_path)
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if unix_socket_in_use(path):
            raise StartupError(f"another process is serving on {path}: stop it or choose another socket_path")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        section = self.config.agent
        streams = self._streams
        assert streams is not None
        metrics = self.telemetry.metrics if self.telemetry is not None else NO_METRICS
        services: list[Any] = [self.grpc_health]
        if not section.disable_workload_api:
            services.append(
                WorkloadApiService(
                    streams,
                    caller,
                    issuer,
                    section.allowed_foreign_jwt_claims,
                    allow_unauthenticated_verifiers=section.allow_unauthenticated_verifiers,
                )
            )
        if not section.disable_sds_api:
            services.append(SecretDiscoveryService(streams, caller, section.sds))
        server = GrpcServer(instrument(services, metrics, connections=True), pin_callers=True)
        try:
            # SPIRE's mode: any local process may ask; attestation decides what it gets.
            await server.start_unix(str(path), 0o777)
        except OSError as err:
            raise StartupError(f"cannot listen on {path}: {err.strerror or err}") from None
        self._server = server  # only a started server is closed by stop()
        self._socket_bound = True
        _log.info("Starting Workload and SDS APIs", extra={"address": str(path), "network": "unix"})

    async def _serve_admin_api(
        self,
        path: Path,
        node: NodeIdentityManager,
        cache: WorkloadCache,
        manager: SyncManager,
        delegated: DelegatedIdentityService,
    ) -> None:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if unix_socket_in_use(path):
            raise StartupError(f"another process is serving on {path}: stop it or choose another admin_socket_path")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        metrics = self.telemetry.metrics if self.telemetry is not None else NO_METRICS
        admin = GrpcServer(
            instrument(
                [AgentDebugService(node, cache, manager), AgentLoggerService(), delegated, self.grpc_health], metrics
            ),
            pin_callers=True,
        )
        try:
            # SPIRE's mode for admin sockets: owner and group.
            await admin.start_unix(str(path), 0o770)
        except OSError as err:
            raise StartupError(f"cannot listen on {path}: {err.strerror or err}") from None
        self._admin = admin
        self._admin_path = path
        _log.info("Starting admin APIs", extra={"address": str(path), "network": "unix"})

    def reconfigure(self) -> None:
        """SIGUSR1: report changed plugin data files as SPIRE's reconfigurer sees them; dump an InMem sink."""
        report_plugin_data_changes(self.config.plugins)
        if self.telemetry is not None:
            self.telemetry.dump_inmem()

    async def stop(self) -> None:
        """Stop everything that started, in reverse order."""
        if self._streams is not None:
            await self._streams.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._socket_bound:
            with contextlib.suppress(FileNotFoundError):
                Path(self.config.agent.socket_path).unlink()
            self._socket_bound = False
        if self._admin is not None:
            self._admin.close()
            await self._admin.wait_closed()
            self._admin = None
        if self._admin_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._admin_path.unlink()
            self._admin_path = None
        if self._health is not None:
            await self._health.stop()
        await self._checker.stop()
        if self._store_task is not None:
            self._store_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_task
        if self.sync_task is not None:
            self.sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, AgentStopped):
                await self.sync_task
        if self._client is not None:
            self._client.close()
        if self._catalog is not None:
            self._catalog.close()
        if self.telemetry is not None:
            await self.telemetry.stop()
        _log.info("Agent stopped")


async def _serve(config: AgentConfig) -> int:
    daemon = AgentDaemon(config)
    with handle_signals(daemon.reconfigure) as stop:
        return await serve_until_stopped(
            daemon,
            stop,
            name="Agent",
            log=_log,
            refusals=(StartupError, AgentStopped, OSError, TelemetryError),
            failure=lambda: daemon.sync_task,
        )


def run_agent(config: AgentConfig) -> int:
    """Run the agent until a signal (or a fatal refusal by the server) stops it; the exit code."""
    return asyncio.run(_serve(config))
