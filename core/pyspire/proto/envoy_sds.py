"""Envoy's SecretDiscoveryService (SDS v3) on grpclib, with the messages of ``xds-protos``.

``xds-protos`` ships Envoy's messages and grpcio stubs; the agent serves on grpclib (it must
read the caller's credentials from the Unix socket), so the routing table is written here, in
the shape of grpclib's generated code. Only the paths travel on the wire. (``xds-protos`` has
no type stubs: its messages are ``Any`` to the type checker.)
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Final

import grpclib.const
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

if TYPE_CHECKING:
    import grpclib.server

__all__ = ["SECRET_TYPE_URL", "SERVICE_NAME", "SecretDiscoveryServiceBase", "path"]

SERVICE_NAME: Final = "envoy.service.secret.v3.SecretDiscoveryService"

SECRET_TYPE_URL: Final = f"type.googleapis.com/{secret_pb2.Secret.DESCRIPTOR.full_name}"
"""The ``type_url`` of every resource SDS serves."""

_REQUEST, _RESPONSE = discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse
_DELTA_REQUEST, _DELTA_RESPONSE = discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse


def path(method: str) -> str:
    """The wire path of an SDS method."""
    return f"/{SERVICE_NAME}/{method}"


class SecretDiscoveryServiceBase(abc.ABC):
    """Base class of an SDS server: implement the three methods."""

    @abc.abstractmethod
    async def StreamSecrets(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        """Answer requests for named secrets, and push new versions as they change."""

    @abc.abstractmethod
    async def FetchSecrets(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        """Answer one request for named secrets."""

    @abc.abstractmethod
    async def DeltaSecrets(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        """The incremental variant (pyspire answers UNIMPLEMENTED, as SPIRE does)."""

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """grpclib's routing table: the service's paths to this object's methods."""
        stream_stream = grpclib.const.Cardinality.STREAM_STREAM
        return {
            path("StreamSecrets"): grpclib.const.Handler(self.StreamSecrets, stream_stream, _REQUEST, _RESPONSE),
            path("FetchSecrets"): grpclib.const.Handler(
                self.FetchSecrets, grpclib.const.Cardinality.UNARY_UNARY, _REQUEST, _RESPONSE
            ),
            path("DeltaSecrets"): grpclib.const.Handler(
                self.DeltaSecrets, stream_stream, _DELTA_REQUEST, _DELTA_RESPONSE
            ),
        }
