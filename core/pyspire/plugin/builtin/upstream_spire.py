"""The built-in UpstreamAuthority ``spire``: nested servers, one trust domain.

A downstream server runs beside an agent of its upstream server and has an entry there marked
``downstream``. With the X509-SVID that agent's Workload API gives it (the default one, as
SPIRE takes it), the downstream server calls its upstream over mutual TLS: SVID API
``NewDownstreamX509CA`` signs its CA as an intermediate, Bundle API ``PublishJWTAuthority``
spreads its JWT keys up the tree. The upstream's bundle (``GetBundle``) is read again at every
rotation step, so roots the top server prepares, and JWT keys of other branches, are trusted
here before anything is signed with them.

Plugin data (as SPIRE's): ``server_address``, ``server_port``, ``workload_api_socket``.
Every call fetches a fresh SVID: the agent rotates it, nothing here caches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from pyspire import spire_ids
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PermissionDenied, PluginConfigError, Unavailable
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.plugin.upstream import JwtKey, UpstreamTrust, UpstreamX509Ca
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import TrustDomain, match_id
from pyspire.spiffe.pem import der_certificate
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError
from pyspire.transport import ServerIdentityError, SpiffeChannel, client_tls_context

__all__ = ["SpireUpstreamAuthority"]

CALL_TIMEOUT = 20.0
T = TypeVar("T")


@dataclass(frozen=True)
class SpireUpstreamExperimental:
    """``experimental`` keys SPIRE documents; neither applies here (no named pipes, no PQ KEM choice)."""

    workload_api_named_pipe_name: str = ""
    require_pq_kem: bool = False


@dataclass(frozen=True)
class SpireUpstreamConfig:
    """``plugin_data`` of ``UpstreamAuthority "spire"``."""

    server_address: str
    server_port: int = 8081
    workload_api_socket: str = ""
    experimental: SpireUpstreamExperimental = field(default_factory=SpireUpstreamExperimental)


def _certificates(ders: Any) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(der_certificate(bytes(der)) for der in ders)
    except ValueError as err:
        raise Internal(f"the upstream server returned an unreadable certificate: {err}") from None


def _jwt_keys(keys: Any) -> tuple[JwtKey, ...]:
    return tuple(
        JwtKey(
            key.key_id, bytes(key.public_key), datetime.fromtimestamp(key.expires_at, UTC) if key.expires_at else None
        )
        for key in keys
    )


class SpireUpstreamAuthority:
    """Gets the server's CA from an upstream server of the same trust domain."""

    def __init__(self) -> None:
        self._config: SpireUpstreamConfig | None = None
        self._trust_domain: TrustDomain | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(SpireUpstreamConfig, plugin_data)
        if not config.workload_api_socket:
            raise PluginConfigError("workload_api_socket", "is required (the socket of the co-located agent)")
        if config.experimental.workload_api_named_pipe_name:
            raise PluginConfigError("experimental.workload_api_named_pipe_name", "named pipes exist on Windows only")
        if not 0 < config.server_port < 65536:
            raise PluginConfigError("server_port", f"{config.server_port} is not a TCP port")
        self._config = config
        self._trust_domain = core.trust_domain

    # --- the hooks -------------------------------------------------------------------

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        request = svid_pb2.NewDownstreamX509CARequest(csr=csr, preferred_ttl=int(preferred_ttl.total_seconds()))

        async def call(channel: SpiffeChannel) -> Any:
            return await svid_grpc.SVIDStub(channel).NewDownstreamX509CA(request, timeout=CALL_TIMEOUT)

        reply = self._run(call)
        chain = _certificates(reply.ca_cert_chain)
        roots = _certificates(reply.x509_authorities)
        if not chain or not roots:
            raise Internal("the upstream server returned no CA chain or no X.509 authorities")
        return UpstreamX509Ca(ca_chain=chain, upstream_roots=roots)

    @hookimpl
    def publish_jwt_key(self, jwt_key: JwtKey) -> tuple[JwtKey, ...]:
        expires_at = int(jwt_key.expires_at.timestamp()) if jwt_key.expires_at else 0
        request = bundle_pb2.PublishJWTAuthorityRequest(
            jwt_authority=types_pb2.JWTKey(
                public_key=jwt_key.public_key_der, key_id=jwt_key.key_id, expires_at=expires_at
            )
        )

        async def call(channel: SpiffeChannel) -> Any:
            return await bundle_grpc.BundleStub(channel).PublishJWTAuthority(request, timeout=CALL_TIMEOUT)

        return _jwt_keys(self._run(call).jwt_authorities)

    @hookimpl
    def upstream_trust(self) -> UpstreamTrust:
        async def call(channel: SpiffeChannel) -> Any:
            return await bundle_grpc.BundleStub(channel).GetBundle(bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT)

        bundle = self._run(call)
        return UpstreamTrust(
            x509_roots=_certificates(a.asn1 for a in bundle.x509_authorities),
            jwt_keys=_jwt_keys(bundle.jwt_authorities),
        )

    # --- talking to the upstream server ----------------------------------------------

    def _run(self, call: Callable[[SpiffeChannel], Awaitable[T]]) -> T:
        """Make ``call`` on the upstream server (hooks run in worker threads: a loop of our own)."""
        return asyncio.run(self._call_upstream(call))

    async def _call_upstream(self, call: Callable[[SpiffeChannel], Awaitable[T]]) -> T:
        config, trust_domain = self._configured()
        address = f"{config.server_address}:{config.server_port}"
        try:
            async with WorkloadApiClient(f"unix://{config.workload_api_socket}", timeout=CALL_TIMEOUT) as workload:
                context = await asyncio.wait_for(workload.fetch_x509_context(), CALL_TIMEOUT)
        except (WorkloadApiError, OSError, TimeoutError) as err:
            raise Unavailable(
                f"no X509-SVID from the Workload API at {config.workload_api_socket}: {err or type(err).__name__}"
            ) from None
        bundle = context.bundles.get(trust_domain)
        if bundle is None or not bundle.x509_authorities:
            raise Unavailable(f"the Workload API at {config.workload_api_socket} gave no bundle for {trust_domain}")
        svid = context.default_svid
        tls = client_tls_context(bundle.x509_authorities, svid.chain, svid.private_key)
        server_id = spire_ids.server_id(trust_domain)
        channel = SpiffeChannel(
            config.server_address, config.server_port, ssl_context=tls, server_id=match_id(server_id)
        )
        try:
            return await call(channel)
        except GRPCError as err:
            if err.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED):
                raise Unavailable(f"upstream server {address}: {err.message}") from None
            if err.status in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED):
                raise PermissionDenied(
                    f"upstream server {address} refused {svid.spiffe_id} ({err.message}): "
                    "its entry there must be marked downstream"
                ) from None
            raise Internal(f"upstream server {address}: {err.status.name}: {err.message}") from None
        except ServerIdentityError as err:
            raise Unavailable(f"upstream server {address} failed its identity check: {err}") from None
        except (TimeoutError, OSError, StreamTerminatedError) as err:
            raise Unavailable(f"upstream server {address} unreachable: {err or type(err).__name__}") from None
        finally:
            channel.close()

    def _configured(self) -> tuple[SpireUpstreamConfig, TrustDomain]:
        if self._config is None or self._trust_domain is None:
            raise Internal("the spire upstream authority is not configured")
        return self._config, self._trust_domain
