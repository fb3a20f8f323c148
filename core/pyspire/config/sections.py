"""The typed blocks of SPIRE's config files that pyspire implements.

Field names are SPIRE's keys and defaults are SPIRE's (``doc/spire_server.md``,
``doc/spire_agent.md``, ``conf/*_full.conf``). Keys SPIRE knows that pyspire does not
implement are not fields: :mod:`pyspire.config.support` handles them before these classes
see the block, so a genuinely unknown key is always an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pyspire import spire_ids
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain

__all__ = [
    "AgentExperimental",
    "AgentSection",
    "BundleEndpoint",
    "BundleEndpointProfile",
    "CaSubject",
    "FederatesWith",
    "FederatesWithProfile",
    "Federation",
    "HealthChecks",
    "HttpsSpiffeEndpoint",
    "HttpsSpiffeProfile",
    "HttpsWebProfile",
    "InMem",
    "KeyTypeName",
    "LogFormat",
    "LogLevel",
    "OpenTelemetry",
    "PartnerWebProfile",
    "Prometheus",
    "RateLimit",
    "Sds",
    "ServerExperimental",
    "ServerSection",
    "ServingCertFile",
    "StatsdAddress",
    "Telemetry",
]

KeyTypeName = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-4096"]
"""Key type names as SPIRE's config writes them (``pyspire.plugin.KeyType`` values)."""


class LogLevel(enum.Enum):
    """Log levels, matched case-insensitively as SPIRE does (``debug`` == ``DEBUG``)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class LogFormat(enum.Enum):
    """Log line formats."""

    TEXT = "text"
    JSON = "json"


def _positive(name: str, value: timedelta | None) -> None:
    if value is not None and value <= timedelta(0):
        raise ValueError(f'key "{name}": must be a positive duration')


@dataclass(frozen=True)
class CaSubject:
    """``ca_subject``: the subject of a self-signed CA certificate."""

    country: tuple[str, ...] = ("US",)
    organization: tuple[str, ...] = ("SPIFFE",)
    common_name: str = ""


@dataclass(frozen=True)
class RateLimit:
    """``ratelimit``: per-IP limits on attestation and signing (both on by default)."""

    attestation: bool = True
    signing: bool = True


@dataclass(frozen=True)
class ServingCertFile:
    """``serving_cert_file``: a certificate and key for the https_web bundle endpoint."""

    cert_file_path: Path
    key_file_path: Path
    file_sync_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class HttpsWebProfile:
    """The ``https_web`` bundle endpoint profile (a WebPKI certificate from files)."""

    serving_cert_file: ServingCertFile | None = None

    def __post_init__(self) -> None:
        if self.serving_cert_file is None:
            raise ValueError('profile "https_web" needs serving_cert_file (ACME is not supported by pyspire)')


@dataclass(frozen=True)
class HttpsSpiffeProfile:
    """The ``https_spiffe`` bundle endpoint profile (the server's own SVID)."""


@dataclass(frozen=True)
class BundleEndpointProfile:
    """``profile "<name>" {}``: exactly one of the two profiles."""

    https_web: HttpsWebProfile | None = None
    https_spiffe: HttpsSpiffeProfile | None = None

    def __post_init__(self) -> None:
        if (self.https_web is None) == (self.https_spiffe is None):
            raise ValueError('give exactly one profile: "https_web" or "https_spiffe"')


@dataclass(frozen=True)
class BundleEndpoint:
    """``federation.bundle_endpoint``: where this server serves its bundle."""

    address: str = "0.0.0.0"  # noqa: S104 - SPIRE's default; operators narrow it
    port: int = 443
    refresh_hint: timedelta = timedelta(minutes=5)
    profile: BundleEndpointProfile = field(
        default_factory=lambda: BundleEndpointProfile(https_spiffe=HttpsSpiffeProfile())
    )


@dataclass(frozen=True)
class PartnerWebProfile:
    """The partner's bundle endpoint has a WebPKI certificate (no settings)."""


@dataclass(frozen=True)
class FederatesWithProfile:
    """``bundle_endpoint_profile "<name>" {}`` of a federation partner."""

    https_web: PartnerWebProfile | None = None
    https_spiffe: HttpsSpiffeEndpoint | None = None

    def __post_init__(self) -> None:
        if (self.https_web is None) == (self.https_spiffe is None):
            raise ValueError('give exactly one bundle_endpoint_profile: "https_web" or "https_spiffe"')


@dataclass(frozen=True)
class HttpsSpiffeEndpoint:
    """The partner's bundle endpoint authenticates with this SPIFFE ID."""

    endpoint_spiffe_id: SpiffeId


@dataclass(frozen=True)
class FederatesWith:
    """``federates_with "<trust domain>" {}``: a partner whose bundle this server fetches."""

    bundle_endpoint_url: str
    bundle_endpoint_profile: FederatesWithProfile

    def __post_init__(self) -> None:
        if not self.bundle_endpoint_url.startswith("https://"):
            raise ValueError(f'bundle_endpoint_url "{self.bundle_endpoint_url}" must be an https:// URL')


@dataclass(frozen=True)
class Federation:
    """``federation``: this server's bundle endpoint and its federation partners."""

    bundle_endpoint: BundleEndpoint | None = None
    federates_with: dict[TrustDomain, FederatesWith] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerExperimental:
    """``experimental`` keys of the server that pyspire honours."""

    cache_reload_interval: timedelta = timedelta(seconds=5)
    """How often the caches poll the datastore's change events (at most every second)."""
    full_cache_reload_interval: timedelta = timedelta(hours=24)
    """How often the caches are rebuilt from a full read of the datastore, as SPIRE's are."""
    prune_events_older_than: timedelta = timedelta(hours=12)

    def __post_init__(self) -> None:
        for name in ("cache_reload_interval", "full_cache_reload_interval", "prune_events_older_than"):
            _positive(name, getattr(self, name))


@dataclass(frozen=True)
class ServerSection:
    """The ``server {}`` block."""

    trust_domain: TrustDomain
    data_dir: Path
    bind_address: str = "0.0.0.0"  # noqa: S104 - SPIRE's default listen address
    bind_port: int = 8081
    socket_path: Path = Path("/tmp/spire-server/private/api.sock")  # noqa: S108 - SPIRE's default
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT
    log_file: Path | None = None
    log_source_location: bool = False
    ca_key_type: KeyTypeName = "ec-p256"
    jwt_key_type: KeyTypeName | None = None
    ca_ttl: timedelta = timedelta(hours=24)
    ca_subject: CaSubject = field(default_factory=CaSubject)
    default_x509_svid_ttl: timedelta = timedelta(hours=1)
    default_jwt_svid_ttl: timedelta = timedelta(minutes=5)
    agent_ttl: timedelta | None = None
    jwt_issuer: str = ""
    disable_jwt_svids: bool = False
    admin_ids: tuple[SpiffeId, ...] = ()
    audit_log_enabled: bool = False
    ratelimit: RateLimit = field(default_factory=RateLimit)
    federation: Federation = field(default_factory=Federation)
    prune_attested_nodes_expired_for: timedelta | None = None
    prune_tofu_nodes: bool = False
    max_attested_node_info_staleness: timedelta = timedelta(0)
    """How old the cached standing of an agent may be when it calls. 0 (SPIRE's default): every
    agent call reads the agent's node record from the datastore, so a server cut off from the
    datastore refuses agents instead of serving one banned through another server."""
    experimental: ServerExperimental = field(default_factory=ServerExperimental)

    def __post_init__(self) -> None:
        if self.max_attested_node_info_staleness < timedelta(0):
            raise ValueError('key "max_attested_node_info_staleness": must not be negative')
        for name in (
            "ca_ttl",
            "default_x509_svid_ttl",
            "default_jwt_svid_ttl",
            "agent_ttl",
            "prune_attested_nodes_expired_for",
        ):
            _positive(name, getattr(self, name))
        if not 0 < self.bind_port < 65536:
            raise ValueError(f'key "bind_port": {self.bind_port} is not a TCP port')
        if self.trust_domain in self.federation.federates_with:
            raise ValueError(
                f'federation: federates_with "{self.trust_domain}": a server cannot federate with its own trust domain'
            )

    @property
    def effective_jwt_key_type(self) -> KeyTypeName:
        """``jwt_key_type``, defaulting to ``ca_key_type`` as in SPIRE."""
        return self.jwt_key_type or self.ca_key_type

    @property
    def effective_agent_ttl(self) -> timedelta:
        """``agent_ttl``, defaulting to ``default_x509_svid_ttl`` as in SPIRE."""
        return self.agent_ttl or self.default_x509_svid_ttl

    @property
    def server_id(self) -> SpiffeId:
        """The server's own SPIFFE ID, ``spiffe://<trust domain>/spire/server``."""
        return spire_ids.server_id(self.trust_domain)


@dataclass(frozen=True)
class Sds:
    """``sds``: Envoy SDS resource names."""

    default_svid_name: str = "default"
    default_bundle_name: str = "ROOTCA"
    default_all_bundles_name: str = "ALL"
    disable_spiffe_cert_validation: bool = False
    require_security_header: bool = True
    """pyspire's own key: SDS callers must send ``workload.spiffe.io: true`` as Workload API
    callers do (Cure53 SPI-01-008: SPIRE does not ask it of SDS). Envoy sends it with
    ``initial_metadata`` on its SDS ``grpc_service``; false serves Envoy configs written for SPIRE."""


@dataclass(frozen=True)
class AgentExperimental:
    """``experimental`` keys of the agent that pyspire honours."""

    sync_interval: timedelta = timedelta(seconds=5)
    use_sync_authorized_entries: bool | None = None
    """None (unset) syncs with SyncAuthorizedEntries, as SPIRE does; SPIRE deprecates the key."""

    def __post_init__(self) -> None:
        _positive("sync_interval", self.sync_interval)

    @property
    def sync_authorized_entries(self) -> bool:
        """Whether the agent syncs with SyncAuthorizedEntries (else GetAuthorizedEntries)."""
        return self.use_sync_authorized_entries is not False


def _address_port(item: str, rest: str) -> int:
    if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
        raise ValueError(f'key "server_address": "{item}" is not host, host:port or [ipv6]:port')
    return int(rest[1:])


@dataclass(frozen=True)
class AgentSection:
    """The ``agent {}`` block."""

    trust_domain: TrustDomain
    server_address: str
    server_port: int = 8081
    socket_path: Path = Path("/tmp/spire-agent/public/api.sock")  # noqa: S108 - SPIRE's default
    admin_socket_path: Path | None = None
    authorized_delegates: tuple[str, ...] = ()
    """SPIFFE IDs of workloads that may use the DelegatedIdentity API (on the admin socket)."""
    data_dir: Path = Path(".")
    trust_bundle_path: Path | None = None
    trust_bundle_url: str | None = None
    trust_bundle_format: Literal["pem", "spiffe"] = "pem"
    insecure_bootstrap: bool = False
    join_token: str | None = None
    join_token_file: Path | None = None
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT
    log_file: Path | None = None
    log_source_location: bool = False
    workload_x509_svid_key_type: KeyTypeName = "ec-p256"
    availability_target: timedelta | None = None
    x509_svid_cache_max_size: int = 1000
    jwt_svid_cache_max_size: int = 1000
    allow_unauthenticated_verifiers: bool = False
    allowed_foreign_jwt_claims: tuple[str, ...] = ()
    disable_workload_api: bool = False
    disable_sds_api: bool = False
    sds: Sds = field(default_factory=Sds)
    experimental: AgentExperimental = field(default_factory=AgentExperimental)

    def __post_init__(self) -> None:
        sources = [name for name in ("trust_bundle_path", "trust_bundle_url") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError("only one of trust_bundle_path and trust_bundle_url may be set")
        if sources and self.insecure_bootstrap:
            raise ValueError(f"insecure_bootstrap cannot be used together with {sources[0]}")
        if self.trust_bundle_url is not None and not self.trust_bundle_url.startswith("https://"):
            raise ValueError(f'trust_bundle_url "{self.trust_bundle_url}" must be an https:// URL')
        if self.join_token and self.join_token_file:
            raise ValueError("only one of join_token and join_token_file may be set")
        if self.availability_target is not None and self.availability_target < timedelta(hours=24):
            raise ValueError('key "availability_target": must be at least 24h')
        if self.x509_svid_cache_max_size < 0 or self.jwt_svid_cache_max_size < 0:
            raise ValueError("SVID cache sizes must not be negative")
        if not 0 < self.server_port < 65536:
            raise ValueError(f'key "server_port": {self.server_port} is not a TCP port')
        _ = self.servers  # refuse a malformed list now, not when the agent first connects
        _ = self.authorized_delegate_ids
        if self.authorized_delegates and self.admin_socket_path is None:
            raise ValueError(
                'key "authorized_delegates": the DelegatedIdentity API is served on the admin socket: '
                "set admin_socket_path too"
            )

    @property
    def authorized_delegate_ids(self) -> tuple[SpiffeId, ...]:
        """``authorized_delegates`` parsed: as SPIRE, each must be a workload of this trust domain."""
        found = []
        for value in self.authorized_delegates:
            try:
                delegate = SpiffeId.parse(value)
            except SpiffeIdError as err:
                raise ValueError(f'key "authorized_delegates": "{value}" is not a SPIFFE ID: {err}') from None
            if delegate.trust_domain != self.trust_domain or not delegate.path:
                raise ValueError(
                    f'key "authorized_delegates": "{value}" is not a workload of trust domain '
                    f'"{self.trust_domain.name}"'
                )
            found.append(delegate)
        return tuple(found)

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        """Where the servers are: ``server_address`` split on commas, each ``host`` or ``host:port``.

        SPIRE takes one address (a DNS name may resolve to several servers, and every address
        it resolves to is tried); pyspire also takes a list, for servers sharing a datastore
        without a name in front of them. A host without a port uses ``server_port``; IPv6
        addresses with a port are written ``[::1]:8081``.
        """
        found = []
        for item in (part.strip() for part in self.server_address.split(",")):
            if not item:
                raise ValueError(f'key "server_address": empty address in "{self.server_address}"')
            host, port = item, self.server_port
            if item.startswith("["):
                host, _, rest = item[1:].partition("]")
                if rest:
                    port = _address_port(item, rest)
            elif item.count(":") == 1:
                host, _, rest = item.partition(":")
                port = _address_port(item, ":" + rest)
            if not host:
                raise ValueError(f'key "server_address": "{item}" has no host')
            found.append((host, port))
        return tuple(found)

    def require_bootstrap(self) -> None:
        """SPIRE refuses to start without a way to trust the server: so does pyspire.

        Checked when the agent runs (not when tools merely read the file).
        """
        if not (self.trust_bundle_path or self.trust_bundle_url or self.insecure_bootstrap):
            raise ValueError(
                "the agent needs trust_bundle_path or trust_bundle_url to verify the server "
                "(or insecure_bootstrap = true, which trusts the first server it reaches)"
            )


@dataclass(frozen=True)
class HealthChecks:
    """``health_checks``: the HTTP liveness/readiness listener."""

    listener_enabled: bool = False
    bind_address: str = "localhost"
    bind_port: int = 80
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass(frozen=True)
class Prometheus:
    """``telemetry.Prometheus``: the metrics exporter (SPIRE listens on localhost when host is empty)."""

    host: str = "localhost"
    port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f'key "port": {self.port} is not a TCP port')


@dataclass(frozen=True)
class StatsdAddress:
    """One element of ``telemetry.Statsd = [{ address = "host:port" }]`` (or of ``DogStatsd``)."""

    address: str


@dataclass(frozen=True)
class InMem:
    """``telemetry.InMem {}``: aggregate metrics in memory, dumped to the log on SIGUSR1."""


@dataclass(frozen=True)
class OpenTelemetry:
    """``telemetry.OpenTelemetry``: traces (pyspire's own block; SPIRE has no tracing). Off when absent.

    Spans go to an OTLP receiver (a collector, Jaeger, Tempo...) over ``protocol`` at
    ``endpoint``, or are printed as JSON lines to stdout with ``exporter = "console"``.
    """

    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str = ""
    """OTLP endpoint: ``http://host:4318`` for http/protobuf (``/v1/traces`` is added), ``host:4317`` for grpc."""
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    insecure: bool = False
    """grpc only: plaintext instead of TLS."""
    headers: dict[str, str] = field(default_factory=dict)
    service_name: str = ""
    """The ``service.name`` resource attribute (default ``pyspire-server``/``pyspire-agent``)."""
    sample_ratio: float = 1.0
    """The fraction of traces recorded (parent-based: a sampled caller keeps its children sampled)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f'key "sample_ratio": {self.sample_ratio} is not between 0 and 1')
        if self.exporter == "otlp" and not self.endpoint:
            raise ValueError('key "endpoint": is required with exporter = "otlp"')


@dataclass(frozen=True)
class Telemetry:
    """``telemetry``: metrics sinks and their shaping keys (see ``pyspire.telemetry``), and traces."""

    prometheus: Prometheus | None = field(default=None, metadata={"key": "Prometheus"})
    statsd: tuple[StatsdAddress, ...] = field(default=(), metadata={"key": "Statsd"})
    dogstatsd: tuple[StatsdAddress, ...] = field(default=(), metadata={"key": "DogStatsd"})
    inmem: InMem | None = field(default=None, metadata={"key": "InMem"})
    metric_prefix: str = field(default="", metadata={"key": "MetricPrefix"})
    """Starts every metric name instead of ``spire_server``/``spire_agent``."""
    enable_trust_domain_label: bool = field(default=False, metadata={"key": "EnableTrustDomainLabel"})
    """Adds a ``trust_domain`` label to every metric."""
    enable_hostname_label: bool = field(default=True, metadata={"key": "EnableHostnameLabel"})
    """Adds a ``host`` label to every metric (SPIRE's default: on)."""
    allowed_prefixes: tuple[str, ...] = field(default=(), metadata={"key": "AllowedPrefixes"})
    """Dotted name prefixes (service name included) to emit; with any, others are dropped."""
    blocked_prefixes: tuple[str, ...] = field(default=(), metadata={"key": "BlockedPrefixes"})
    allowed_labels: tuple[str, ...] = field(default=(), metadata={"key": "AllowedLabels"})
    """Label names to keep (others are dropped from every metric)."""
    blocked_labels: tuple[str, ...] = field(default=(), metadata={"key": "BlockedLabels"})
    open_telemetry: OpenTelemetry | None = field(default=None, metadata={"key": "OpenTelemetry"})
