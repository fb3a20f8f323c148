"""Every metric the daemons emit: the source of ``docs/metrics.md``, checked against real scrapes.

Keys are listed as go-metrics keys (without the service name); ``spire`` says whether SPIRE
emits the same key, so dashboards written for SPIRE find it. RPC metrics are derived from the
services each daemon serves. The tests scrape real daemons and fail on any metric not listed
here, and the reference test fails when ``docs/metrics.md`` is not what :func:`markdown` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pyspire.telemetry.plugins import plugin_metric_keys
from pyspire.telemetry.rpc import rpc_metric_key

__all__ = ["SPIRE_NOT_EMITTED", "MetricInfo", "catalog", "markdown", "prometheus_names", "served_paths"]

Kind = Literal["call counter", "counter", "gauge", "sample"]
Daemon = Literal["server", "agent"]


@dataclass(frozen=True)
class MetricInfo:
    """One metric key a daemon emits."""

    key: tuple[str, ...]
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    spire: bool = True
    """SPIRE emits the same key (with the same labels)."""


def _m(key: str, kind: Kind, description: str, labels: tuple[str, ...] = (), *, spire: bool = True) -> MetricInfo:
    return MetricInfo(tuple(key.split(".")), kind, description, labels, spire)


_SERVER = (
    _m("ca.manager.x509_ca.prepare", "call counter", "The CA manager prepares the next X.509 CA."),
    _m("ca.manager.x509_ca.activate", "counter", "The CA manager activated an X.509 CA."),
    _m("ca.manager.jwt_key.prepare", "call counter", "The CA manager prepares the next JWT key."),
    _m("manager.jwt_key.activate", "counter", "The CA manager activated a JWT key."),
    _m("ca.manager.bundle.prune", "call counter", "The CA manager prunes expired authorities from the bundle."),
    _m("ca.manager.bundle.pruned", "counter", "The CA manager removed expired authorities from the bundle."),
    _m(
        "manager.x509_ca.rotate.expiration",
        "gauge",
        "Expiration (Unix seconds) of the X.509 CA activated last.",
        ("trust_domain_id",),
    ),
    _m("manager.x509_ca.rotate.ttl", "gauge", "Seconds the X.509 CA had left when activated.", ("trust_domain_id",)),
    _m("server_ca.sign.x509_svid", "counter", "The CA signed an X509-SVID (workload, agent or server)."),
    _m("server_ca.sign.jwt_svid", "counter", "The CA signed a JWT-SVID."),
    _m("server_ca.sign.x509_ca_svid", "counter", "The CA signed a downstream X.509 CA."),
    _m("svid.rotate", "call counter", "The server rotates its own X509-SVID."),
    _m("entry.cache.reload", "call counter", "The server loads its caches in full from the datastore."),
    _m("registration_entry.manager.prune", "call counter", "The server prunes expired registration entries."),
    _m("node.manager.prune", "call counter", "The server prunes agents expired for prune_attested_nodes_expired_for."),
    _m(
        "bundle_manager.fetch.federated_bundle",
        "call counter",
        "The server fetches a federated bundle from its partner's endpoint.",
        ("trust_domain_id",),
    ),
    _m(
        "bundle_manager.update.federated_bundle",
        "counter",
        "The server refreshed a federated bundle from its partner's endpoint.",
        ("trust_domain_id",),
    ),
)

_AGENT = (
    _m("node.attestor.new_svid", "call counter", "The agent attests its node to get its first SVID."),
    _m("node.attest", "call counter", "The agent attests again to renew its SVID (re-attestable attestors)."),
    _m("agent_svid.rotate", "call counter", "The agent renews its SVID (RenewAgent)."),
    _m("bootstraped", "gauge", "1 once the agent holds an SVID (attested, or kept from before a restart), else 0."),
    _m(
        "bootstrap_seconds",
        "gauge",
        "When (Unix seconds) the agent began its first attestation attempts; 0 once bootstrapped.",
        ("mode",),
    ),
    _m("bootstrap_attempts", "gauge", "Attestation attempts since the agent began; 0 once bootstrapped.", ("mode",)),
    _m("store.store_svid_updates", "call counter", "The agent pushes what changed to its SVIDStore plugins (a round)."),
    _m("manager.sync.fetch_entries_updates", "call counter", "The agent syncs its entries and bundles."),
    _m("manager.sync.fetch_svids_updates", "call counter", "The agent asks for a batch of workload X509-SVIDs."),
    _m("sync_entries_total", "gauge", "Entries the last sync left in the cache."),
    _m("sync_entries_missing", "gauge", "Entries the last sync added."),
    _m("sync_entries_stale", "gauge", "Entries the last sync found changed."),
    _m("sync_entries_dropped", "gauge", "Entries the last sync removed."),
    _m("sync_bundles_total", "gauge", "Bundles (own and federated) the last sync holds."),
    _m("lru_cache_entry_add", "counter", "Entries added to the cache."),
    _m("lru_cache_entry_update", "counter", "Entries updated in the cache."),
    _m("lru_cache_entry_remove", "counter", "Entries removed from the cache."),
    _m("lru_cache_record_map_size", "gauge", "Entries in the cache."),
    _m("lru_cache_svid_map_size", "gauge", "X509-SVIDs in the cache."),
    _m("cache_manager.expiring_svids", "sample", "X509-SVIDs renewed because they are expiring, per sync."),
    _m("cache_manager.outdated_svids", "sample", "X509-SVIDs renewed because their entry changed, per sync."),
    _m("workload_api.connection", "counter", "Calls to the Workload API."),
    _m("workload_api.connections", "gauge", "Workload API calls open now."),
    _m("sds_api.connection", "counter", "Calls to Envoy SDS."),
    _m("sds_api.connections", "gauge", "SDS calls open now."),
    _m("workload_api.workload_attestation", "call counter", "The agent attests a caller."),
    _m("workload_api.workload_attestor", "call counter", "A workload attestor attests a caller.", ("attestor",)),
    _m("workload_api.discovered_selectors", "sample", "Selectors a caller was attested with."),
)

_COMMON = (
    _m("started", "gauge", "1 once the daemon started, with its version.", ("version", "trust_domain_id")),
    _m("uptime_in_ms", "gauge", "Milliseconds since the daemon started (every 10 s)."),
)

SPIRE_NOT_EMITTED: tuple[tuple[str, str], ...] = (
    ("datastore.*.*_event.fetch", "pyspire's caches read change events in ranges, never one by one"),
    (
        "datastore.bundle.append, .prune, .set",
        "every bundle change is one atomic modify_bundle (datastore.bundle.update)",
    ),
    ("datastore.node.selectors.*", "node selectors are read and written with the node (datastore.node.*)"),
    (
        "datastore.bundle.{x509,jwt}.{taint,revoke}",
        "tainting and revoking are bundle updates (datastore.bundle.update)",
    ),
    (
        "node.agents_by_*_cache.count, entry.*_cache.count, *.skipped_*_event_ids.count",
        "SPIRE's events-based cache only",
    ),
    ("cache_manager.tainted_*, *.process_tainted_*", "tainted SVIDs are renewed within the sync (expiring_svids)"),
    (
        "delegated_identity_api.connection, .connections",
        "SPIRE declares them, but its admin endpoint (where the DelegatedIdentity API is served) counts no connections",
    ),
    ("delegated_identity_api.subscribe_x509_svids.first_update", "a delegate's wait for its first update is not timed"),
    ("agent_key_manager.*_private_key", "not implemented by pyspire"),
    ("runtime.* (go-metrics runtime metrics), go_* (Go's collector)", "they describe the Go runtime"),
)
"""SPIRE metrics pyspire does not emit, and why."""


def _null_handler(*_: object) -> None:
    """Stands in for the handlers when only the paths of a service's mapping are read."""


class _NoHandlers:
    def __getattr__(self, name: str) -> Any:
        return _null_handler


def _paths(*bases: type) -> list[str]:
    paths: list[str] = []
    for base in bases:
        paths.extend(base.__mapping__(_NoHandlers()))  # type: ignore[attr-defined]
    return paths


def served_paths(daemon: Daemon) -> list[str]:
    """The gRPC methods ``daemon`` serves, from the services' own mappings."""
    from grpclib.health.v1.health_grpc import HealthBase  # noqa: PLC0415 - only the reference needs them

    from pyspire.proto.envoy_sds import SecretDiscoveryServiceBase  # noqa: PLC0415
    from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIBase  # noqa: PLC0415
    from pyspire.proto.spire.api.agent.debug.v1 import debug_grpc as agent_debug  # noqa: PLC0415
    from pyspire.proto.spire.api.agent.logger.v1 import logger_grpc as agent_logger  # noqa: PLC0415
    from pyspire.proto.spire.api.server.agent.v1 import agent_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.debug.v1 import debug_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.entry.v1 import entry_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.logger.v1 import logger_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.svid.v1 import svid_grpc  # noqa: PLC0415
    from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc  # noqa: PLC0415

    if daemon == "server":
        return _paths(
            agent_grpc.AgentBase,
            bundle_grpc.BundleBase,
            entry_grpc.EntryBase,
            svid_grpc.SVIDBase,
            trustdomain_grpc.TrustDomainBase,
            localauthority_grpc.LocalAuthorityBase,
            debug_grpc.DebugBase,
            logger_grpc.LoggerBase,
            HealthBase,
        )
    return _paths(
        SpiffeWorkloadAPIBase, SecretDiscoveryServiceBase, agent_debug.DebugBase, agent_logger.LoggerBase, HealthBase
    )


def _plugin_metrics(daemon: Daemon) -> list[MetricInfo]:
    from pyspire.plugin.facades import DataStore, KeyManager  # noqa: PLC0415

    found: dict[tuple[str, ...], MetricInfo] = {}
    types = (
        [("DataStore", DataStore), ("KeyManager", KeyManager)] if daemon == "server" else [("KeyManager", KeyManager)]
    )
    for plugin_type, handle in types:
        hooks = sorted(name for name in vars(handle) if not name.startswith("_"))
        for hook in hooks:
            for key in plugin_metric_keys(daemon, plugin_type, hook):
                pyspire_only = key[-1] in ("last_sequence", "export_private_key") or key == (
                    "agent_key_manager",
                    "sign_data",
                )
                found.setdefault(
                    key,
                    MetricInfo(key, "call counter", f"{plugin_type} calls ({hook})", (), not pyspire_only),
                )
    return sorted(found.values(), key=lambda info: info.key)


def catalog(daemon: Daemon, rate_limited: Iterable[str] = ()) -> list[MetricInfo]:
    """Every metric key ``daemon`` emits, RPCs first; ``rate_limited``: the RPCs its rate limits count.

    The rate-limited RPCs are the server's policy (``pyspire.server.api.ratelimit``): its
    caller passes them, so telemetry, below the daemons, imports neither.
    """
    rpcs = [
        MetricInfo(rpc_metric_key(path), "call counter", f"Calls of {path}")
        for path in sorted(served_paths(daemon), key=rpc_metric_key)
    ]
    own = _SERVER if daemon == "server" else _AGENT
    limits = [
        MetricInfo(("rateLimit", *rpc_metric_key(path)[1:]), "call counter", f"Rate limiting of {path} (TCP callers)")
        for path in sorted(rate_limited)
    ]
    return [*rpcs, *limits, *_plugin_metrics(daemon), *sorted((*own, *_COMMON), key=lambda info: info.key)]


def prometheus_names(info: MetricInfo, service: str) -> list[str]:
    """The Prometheus series names of ``info`` under ``service`` (call counters add the elapsed-time summary)."""
    base = "_".join((service, *info.key))
    if info.kind == "call counter":
        timed = f"{base}_elapsed_time"
        return [base, timed, f"{timed}_sum", f"{timed}_count"]
    if info.kind == "sample":
        return [base, f"{base}_sum", f"{base}_count"]
    return [base]


def _table(infos: Iterable[MetricInfo]) -> list[str]:
    rows = ["| Type | Key | Labels | SPIRE | Description |", "|---|---|---|---|---|"]
    for info in infos:
        labels = ", ".join(
            f"`{label}`" for label in (*info.labels, *(("status",) if info.kind == "call counter" else ()))
        )
        rows.append(
            f"| {info.kind} | `{'.'.join(info.key)}` | {labels} | {'yes' if info.spire else 'pyspire only'} "
            f"| {info.description} |"
        )
    return rows


def markdown(server_rate_limited: Iterable[str]) -> str:
    """docs/metrics.md; ``server_rate_limited``: the RPCs the server rate-limits."""
    lines = [
        "# Metrics reference",
        "",
        "Generated from `pyspire.telemetry.catalog` (`python -m pyspire.reference docs`); a test fails when it is",
        "out of date, and another fails when a real daemon emits a metric not listed here.",
        "",
        "Keys are SPIRE's (go-metrics keys). A sink names them its own way: Prometheus joins the service",
        "name (`spire_server`, `spire_agent`, or `MetricPrefix`) and the key with `_`",
        "(`spire_server_rpc_agent_v1_agent_attest_agent`); Statsd and DogStatsd join them with `.`. Every",
        "metric also carries `host` (unless `EnableHostnameLabel = false`) and `trust_domain` (with",
        "`EnableTrustDomainLabel = true`). A *call counter* is a counter on the key and a sample of the",
        "elapsed milliseconds on `<key>.elapsed_time` (Prometheus: a summary with the 0.5, 0.9 and 0.99",
        "quantiles over 10 s), both labelled `status` with the gRPC status name the call ended with (`OK`,",
        "`NotFound`...). Prometheus also exports client_golang's `process_*` families, and, in place of",
        "Go's `go_goroutines` and `go_threads`, `python_asyncio_tasks` (unfinished tasks of the daemon's",
        "event loop) and `python_threads` (live threads): where a leak of either would show.",
        "",
    ]
    lines += ["## Server", "", *_table(catalog("server", server_rate_limited)), ""]
    lines += ["## Agent", "", *_table(catalog("agent")), ""]
    lines += ["## SPIRE metrics pyspire does not emit", "", "| Keys | Why |", "|---|---|"]
    lines += [f"| `{keys}` | {why} |" for keys, why in SPIRE_NOT_EMITTED]
    return "\n".join(lines) + "\n"
