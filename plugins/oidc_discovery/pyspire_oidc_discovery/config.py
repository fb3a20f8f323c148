"""The provider's config file: SPIRE's ``oidc-discovery-provider.conf``, every key honoured or refused.

The keys, defaults and rules are those of SPIRE's ``support/oidc-discovery-provider``: one
key source (``server_api``, ``workload_api`` or ``file``), one way of listening
(``serving_cert_file``, ``listen_socket_path`` or ``insecure_addr``), at least one domain.
Where SPIRE's HCL decoder would skip an unknown key, pyspire refuses it by name, as it does
for the server's and agent's files. Three keys are refused because they cannot work here:

- ``acme``: certificates from an ACME service on the internet. Use ``serving_cert_file`` with
  the files an ACME client (certbot, lego) keeps current; the provider reloads them.
- ``experimental.listen_named_pipe_name`` and ``*.experimental.named_pipe_name``: Windows
  named pipes (SPIRE reads them on Windows only).

Durations follow SPIRE: a zero or negative ``poll_interval`` or ``file_sync_interval`` means
the default.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspire.config import ConfigError, load_section
from pyspire.config.reader import read_config_file
from pyspire.config.sections import LogLevel
from pyspire.spiffe import TrustDomain

from pyspire_oidc_discovery.domains import DomainError, domain_key

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "FileSourceConfig",
    "HealthChecksConfig",
    "ProviderConfig",
    "ServerApiConfig",
    "ServingCertFileConfig",
    "TcpAddress",
    "WorkloadApiConfig",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("oidc-discovery-provider.conf")
"""SPIRE's default for ``-config``."""
DEFAULT_POLL_INTERVAL = timedelta(seconds=10)
DEFAULT_FILE_SYNC_INTERVAL = timedelta(minutes=1)
DEFAULT_SERVING_ADDR = ":443"
DEFAULT_HEALTH_PORT = 8008

_ACME_REFUSED = (
    "ACME is not implemented by pyspire-oidc-discovery (it needs the ACME service on the internet); "
    "have an ACME client such as certbot or lego keep a certificate on disk and point serving_cert_file "
    "at it (the provider reloads the files when they change), or serve listen_socket_path behind a proxy "
    "that terminates TLS"
)
_NAMED_PIPE_REFUSED = "named pipes exist only on Windows; pyspire-oidc-discovery runs on Unix"


@dataclass(frozen=True)
class TcpAddress:
    """A listening address as Go's ``net.Listen`` reads ``host:port`` (an empty host: every interface)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _tcp_address(text: str, key: str) -> TcpAddress:
    host, separator, port_text = text.rpartition(":")
    if not separator:
        raise ValueError(f'key "{key}": "{text}" is not host:port (missing port)')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'key "{key}": "{text}" is not host:port (write an IPv6 address in brackets)')
    try:
        port = socket.getservbyname(port_text, "tcp") if port_text and not port_text.isdigit() else int(port_text)
    except (OSError, ValueError):
        raise ValueError(f'key "{key}": "{text}" has no valid port') from None
    if not 0 <= port <= 65535:
        raise ValueError(f'key "{key}": port {port} is out of range (0-65535)')
    return TcpAddress(host, port)


def _interval(value: timedelta | None, default: timedelta) -> timedelta:
    return value if value is not None and value > timedelta(0) else default


@dataclass(frozen=True)
class ServingCertFileConfig:
    """``serving_cert_file``: serve HTTPS with a certificate and key read (and re-read) from disk."""

    cert_file_path: str = ""
    """The certificate file path, PEM (the chain after the leaf)."""
    key_file_path: str = ""
    """The private key file path, PEM (unencrypted)."""
    addr: str = DEFAULT_SERVING_ADDR
    """The address to listen on."""
    file_sync_interval: timedelta | None = None
    """How often the files are checked for changes (default 1m)."""
    address: TcpAddress = field(init=False)
    sync_interval: timedelta = field(init=False)

    def __post_init__(self) -> None:
        for key in ("cert_file_path", "key_file_path"):
            if not getattr(self, key):
                raise ValueError(f'key "{key}": must be configured in the serving_cert_file configuration section')
        object.__setattr__(self, "address", _tcp_address(self.addr or DEFAULT_SERVING_ADDR, "addr"))
        object.__setattr__(self, "sync_interval", _interval(self.file_sync_interval, DEFAULT_FILE_SYNC_INTERVAL))


@dataclass(frozen=True)
class _NamedPipeExperimental:
    """``experimental`` in ``server_api`` / ``workload_api``: only Windows's ``named_pipe_name``, refused when set."""

    named_pipe_name: str = ""

    def __post_init__(self) -> None:
        if self.named_pipe_name:
            raise ValueError(f'key "named_pipe_name": {_NAMED_PIPE_REFUSED}')


@dataclass(frozen=True)
class ServerApiConfig:
    """``server_api``: the JWT keys from the pyspire (or SPIRE) server's Bundle API on its admin socket."""

    address: str = ""
    """The server API's gRPC target; only ``unix:`` targets (``unix:///run/spire-server/private/api.sock``)."""
    poll_interval: timedelta | None = None
    """How often the bundle is fetched (default 10s)."""
    experimental: _NamedPipeExperimental = field(default_factory=_NamedPipeExperimental)
    socket_path: Path = field(init=False)
    interval: timedelta = field(init=False)

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError('key "address": must be configured in the server_api configuration section')
        if not self.address.startswith("unix:"):
            raise ValueError('key "address": must use the unix name system in the server_api configuration section')
        object.__setattr__(self, "socket_path", _unix_target_path(self.address))
        object.__setattr__(self, "interval", _interval(self.poll_interval, DEFAULT_POLL_INTERVAL))


def _unix_target_path(target: str) -> Path:
    """The socket of a gRPC ``unix:`` target: ``unix:path``, ``unix:/abs`` or ``unix:///abs``."""
    rest = target.removeprefix("unix:")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if authority or not slash:
            raise ValueError(
                f'key "address": "{target}" names a host; a unix target is unix:///absolute/path or unix:relative/path'
            )
        rest = "/" + path
    if not rest:
        raise ValueError(f'key "address": "{target}" names no socket path')
    return Path(rest)


@dataclass(frozen=True)
class WorkloadApiConfig:
    """``workload_api``: the JWT keys from an agent's Workload API (FetchJWTBundles)."""

    trust_domain: TrustDomain
    """Whose bundle to serve, out of the bundles the Workload API returns."""
    socket_path: str = ""
    """The Workload API socket."""
    poll_interval: timedelta | None = None
    """How often the bundles are fetched (default 10s)."""
    experimental: _NamedPipeExperimental = field(default_factory=_NamedPipeExperimental)
    socket: Path = field(init=False)
    interval: timedelta = field(init=False)

    def __post_init__(self) -> None:
        if not self.socket_path:
            raise ValueError('key "socket_path": must be configured in the workload_api configuration section')
        object.__setattr__(self, "socket", Path(self.socket_path).absolute())
        object.__setattr__(self, "interval", _interval(self.poll_interval, DEFAULT_POLL_INTERVAL))


@dataclass(frozen=True)
class FileSourceConfig:
    """``file``: the JWT keys from a SPIFFE bundle document on disk."""

    path: str = ""
    """The SPIFFE bundle file (as ``bundle show -format spiffe`` writes it)."""
    poll_interval: timedelta | None = None
    """How often the file is read (default 10s)."""
    interval: timedelta = field(init=False)

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError('key "path": must be configured in the file configuration section')
        object.__setattr__(self, "interval", _interval(self.poll_interval, DEFAULT_POLL_INTERVAL))


@dataclass(frozen=True)
class HealthChecksConfig:
    """``health_checks``: ready and live endpoints on a listener of their own."""

    bind_port: int = DEFAULT_HEALTH_PORT
    """The port (every interface); zero or less means the default, 8008."""
    ready_path: str = "/ready"
    live_path: str = "/live"

    def __post_init__(self) -> None:
        if self.bind_port <= 0:
            object.__setattr__(self, "bind_port", DEFAULT_HEALTH_PORT)
        if self.bind_port > 65535:
            raise ValueError(f'key "bind_port": port {self.bind_port} is out of range (1-65535)')
        object.__setattr__(self, "ready_path", self.ready_path or "/ready")
        object.__setattr__(self, "live_path", self.live_path or "/live")
        for key, path in (("ready_path", self.ready_path), ("live_path", self.live_path)):
            if not path.startswith("/"):
                raise ValueError(f'key "{key}": "{path}" must start with "/"')


@dataclass(frozen=True)
class _Experimental:
    """``experimental`` at the top: only Windows's ``listen_named_pipe_name``, refused when set."""

    listen_named_pipe_name: str = ""

    def __post_init__(self) -> None:
        if self.listen_named_pipe_name:
            raise ValueError(f'key "listen_named_pipe_name": {_NAMED_PIPE_REFUSED}')


@dataclass(frozen=True)
class ProviderConfig:
    """The whole file, checked: exactly one key source and one listener."""

    domains: tuple[str, ...]
    """The domains the provider is served under; a request for another is refused."""
    log_level: LogLevel = LogLevel.INFO
    log_format: str = ""
    """``text`` (also when empty) or ``json``."""
    log_path: str = ""
    """Log to this file instead of stdout."""
    log_requests: bool = False
    """Log every request at debug level."""
    set_key_use: bool = False
    """Write ``"use": "sig"`` on every key (for relying parties that require it)."""
    allow_insecure_scheme: bool = False
    """Write ``http://`` URLs when a request arrives over plain HTTP (only behind a trusted TLS proxy)."""
    insecure_addr: str = ""
    """Serve plain HTTP on this address."""
    listen_socket_path: str = ""
    """Serve plain HTTP on this Unix socket (for a proxy in front)."""
    serving_cert_file: ServingCertFileConfig | None = None
    server_api: ServerApiConfig | None = None
    workload_api: WorkloadApiConfig | None = None
    file: FileSourceConfig | None = None
    health_checks: HealthChecksConfig | None = None
    experimental: _Experimental = field(default_factory=_Experimental)
    jwt_issuer: str = ""
    """The issuer the discovery document names (default: the request's scheme and host)."""
    jwks_uri: str = ""
    """The JWKS address the discovery document names (default: ``/keys`` under the issuer)."""
    server_path_prefix: str = ""
    """A path every endpoint is served under (``/instance/1``: ``/instance/1/keys``...)."""
    insecure_address: TcpAddress | None = field(init=False)

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError('key "domains": at least one domain must be configured')
        for index, domain in enumerate(self.domains):
            try:
                domain_key(domain)
            except DomainError as err:
                raise ValueError(f'key "domains[{index}]": {err}') from None
        object.__setattr__(self, "domains", tuple(dict.fromkeys(self.domains)))
        if self.log_format.lower() not in ("", "text", "json"):
            raise ValueError(f'key "log_format": must be "text" or "json", got "{self.log_format}"')
        self._check_listener()
        self._check_source()
        if self.jwt_issuer:
            _check_url("jwt_issuer", self.jwt_issuer)
        if self.jwks_uri:
            _check_url("jwks_uri", self.jwks_uri)
        if self.server_path_prefix and not self.server_path_prefix.startswith("/"):
            raise ValueError(f'key "server_path_prefix": "{self.server_path_prefix}" must start with "/"')

    def _check_listener(self) -> None:
        serving, socket_path, insecure = self.serving_cert_file, self.listen_socket_path, self.insecure_addr
        if serving is None and not socket_path and not insecure:
            raise ValueError("either serving_cert_file, insecure_addr or listen_socket_path must be configured")
        if serving is not None and insecure:
            raise ValueError('key "insecure_addr": serving_cert_file and insecure_addr are mutually exclusive')
        if serving is not None and socket_path:
            raise ValueError(
                'key "listen_socket_path": serving_cert_file and listen_socket_path are mutually exclusive'
            )
        if insecure and socket_path:
            raise ValueError('key "listen_socket_path": insecure_addr and listen_socket_path are mutually exclusive')
        object.__setattr__(self, "insecure_address", _tcp_address(insecure, "insecure_addr") if insecure else None)

    def _check_source(self) -> None:
        sections = {"server_api": self.server_api, "workload_api": self.workload_api, "file": self.file}
        configured = [name for name, section in sections.items() if section is not None]
        if not configured:
            raise ValueError("exactly one of the server_api, workload_api, or file sections must be configured")
        if len(configured) > 1:
            raise ValueError(
                f'key "{configured[1]}": the server_api, workload_api, and file sections are mutually exclusive'
            )


def _check_url(key: str, text: str) -> None:
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError as err:
        raise ValueError(f'key "{key}": the url could not be parsed: {err}') from None
    if not parsed.scheme:
        raise ValueError(f'key "{key}": the url must contain a scheme')
    if not parsed.netloc:
        raise ValueError(f'key "{key}": the url must contain a host')


def parse_config(raw: Mapping[str, Any], source: str) -> ProviderConfig:
    """The checked config from parsed HCL; ConfigError naming ``source``, the block and the key."""
    if "acme" in raw:
        raise ConfigError(source, "acme", _ACME_REFUSED)
    return load_section(ProviderConfig, raw, where=source)


def load_config(path: Path, *, expand_env: bool = False) -> ProviderConfig:
    """Read and check ``path`` (``$VAR`` expanded first when ``expand_env``); ConfigError when wrong."""
    return parse_config(read_config_file(path, expand_environment=expand_env), str(path))
