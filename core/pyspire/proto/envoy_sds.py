"""Envoy's SecretDiscoveryService (SDS v3) on grpclib, with pyspire's copy of its messages.

The messages are the subset in ``envoy/sds.proto`` (why pyspire keeps its own copy is said
there): field for field Envoy's, in a package of pyspire's, so the type URLs Envoy reads in
``google.protobuf.Any`` are written here by hand. The routing table is in the shape of
grpclib's generated code; only the paths travel on the wire.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Final

import grpclib.const
from google.protobuf import any_pb2
from google.protobuf.message import Message

from pyspire.proto.envoy import sds_pb2

if TYPE_CHECKING:
    import grpclib.server

__all__ = [
    "SECRET_TYPE_URL",
    "SERVICE_NAME",
    "SPIFFE_VALIDATOR_TYPE_URL",
    "SecretDiscoveryServiceBase",
    "pack",
    "path",
]

SERVICE_NAME: Final = "envoy.service.secret.v3.SecretDiscoveryService"

SECRET_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105 - a type name
"""The ``type_url`` of every resource SDS serves."""

SPIFFE_VALIDATOR_TYPE_URL: Final = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
)
"""The ``type_url`` of the SPIFFE certificate validator's configuration."""

_REQUEST, _RESPONSE = sds_pb2.DiscoveryRequest, sds_pb2.DiscoveryResponse
_DELTA_REQUEST, _DELTA_RESPONSE = sds_pb2.DeltaDiscoveryRequest, sds_pb2.DeltaDiscoveryResponse


def pack(message: Message, type_url: str) -> any_pb2.Any:
    """``message`` in an Any under Envoy's name for it (``Any.Pack`` would write pyspire's)."""
    return any_pb2.Any(type_url=type_url, value=message.SerializeToString())


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
