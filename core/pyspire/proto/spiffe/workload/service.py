"""The SPIFFE Workload API service on grpclib, at the standard's unpackaged method paths.

The messages come from ``workload_pb2`` (in a package of pyspire's own, see
workload.proto); the paths are the standard's ``/SpiffeWorkloadAPI/<Method>``, which is all
that travels on the wire. Shaped like grpclib's generated code: a servicer base class whose
``__mapping__`` routes the paths, and a client stub.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Final

import grpclib.client
import grpclib.const

from pyspire.proto.spiffe.workload import workload_pb2 as pb

if TYPE_CHECKING:
    import grpclib.server

__all__ = ["METHODS", "SERVICE_NAME", "SpiffeWorkloadAPIBase", "SpiffeWorkloadAPIStub"]

SERVICE_NAME: Final = "SpiffeWorkloadAPI"

_UNARY_STREAM = grpclib.const.Cardinality.UNARY_STREAM
_UNARY_UNARY = grpclib.const.Cardinality.UNARY_UNARY

METHODS: Final = {
    "FetchX509SVID": (_UNARY_STREAM, pb.X509SVIDRequest, pb.X509SVIDResponse),
    "FetchX509Bundles": (_UNARY_STREAM, pb.X509BundlesRequest, pb.X509BundlesResponse),
    "FetchJWTSVID": (_UNARY_UNARY, pb.JWTSVIDRequest, pb.JWTSVIDResponse),
    "FetchJWTBundles": (_UNARY_STREAM, pb.JWTBundlesRequest, pb.JWTBundlesResponse),
    "ValidateJWTSVID": (_UNARY_UNARY, pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse),
    "FetchWITSVID": (_UNARY_STREAM, pb.WITSVIDRequest, pb.WITSVIDResponse),
    "FetchWITBundles": (_UNARY_STREAM, pb.WITBundlesRequest, pb.WITBundlesResponse),
}
"""Method name -> (cardinality, request type, response type), as the standard defines them."""


def path(method: str) -> str:
    """The wire path of a Workload API method: ``/SpiffeWorkloadAPI/<method>``."""
    return f"/{SERVICE_NAME}/{method}"


class SpiffeWorkloadAPIBase(abc.ABC):
    """Base class of a Workload API server: implement the seven methods."""

    @abc.abstractmethod
    async def FetchX509SVID(self, stream: grpclib.server.Stream[pb.X509SVIDRequest, pb.X509SVIDResponse]) -> None:
        """Stream the caller's X509-SVIDs and bundles, again on every change."""

    @abc.abstractmethod
    async def FetchX509Bundles(
        self, stream: grpclib.server.Stream[pb.X509BundlesRequest, pb.X509BundlesResponse]
    ) -> None:
        """Stream the X.509 bundles the caller may trust."""

    @abc.abstractmethod
    async def FetchJWTSVID(self, stream: grpclib.server.Stream[pb.JWTSVIDRequest, pb.JWTSVIDResponse]) -> None:
        """Mint (or return cached) JWT-SVIDs for an audience."""

    @abc.abstractmethod
    async def FetchJWTBundles(self, stream: grpclib.server.Stream[pb.JWTBundlesRequest, pb.JWTBundlesResponse]) -> None:
        """Stream the JWT bundles the caller may trust."""

    @abc.abstractmethod
    async def ValidateJWTSVID(
        self, stream: grpclib.server.Stream[pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse]
    ) -> None:
        """Validate a JWT-SVID for the caller."""

    @abc.abstractmethod
    async def FetchWITSVID(self, stream: grpclib.server.Stream[pb.WITSVIDRequest, pb.WITSVIDResponse]) -> None:
        """Stream WIT-SVIDs (pyspire answers UNIMPLEMENTED, as SPIRE does)."""

    @abc.abstractmethod
    async def FetchWITBundles(self, stream: grpclib.server.Stream[pb.WITBundlesRequest, pb.WITBundlesResponse]) -> None:
        """Stream WIT bundles (pyspire answers UNIMPLEMENTED, as SPIRE does)."""

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """grpclib's routing table: the unpackaged paths to this object's methods."""
        return {
            path(name): grpclib.const.Handler(getattr(self, name), cardinality, request, response)
            for name, (cardinality, request, response) in METHODS.items()
        }


class SpiffeWorkloadAPIStub:
    """A grpclib client for the Workload API (callers add the security header)."""

    def __init__(self, channel: grpclib.client.Channel) -> None:
        """Bind the seven methods to ``channel``."""
        self.FetchX509SVID = grpclib.client.UnaryStreamMethod(
            channel, path("FetchX509SVID"), pb.X509SVIDRequest, pb.X509SVIDResponse
        )
        self.FetchX509Bundles = grpclib.client.UnaryStreamMethod(
            channel, path("FetchX509Bundles"), pb.X509BundlesRequest, pb.X509BundlesResponse
        )
        self.FetchJWTSVID = grpclib.client.UnaryUnaryMethod(
            channel, path("FetchJWTSVID"), pb.JWTSVIDRequest, pb.JWTSVIDResponse
        )
        self.FetchJWTBundles = grpclib.client.UnaryStreamMethod(
            channel, path("FetchJWTBundles"), pb.JWTBundlesRequest, pb.JWTBundlesResponse
        )
        self.ValidateJWTSVID = grpclib.client.UnaryUnaryMethod(
            channel, path("ValidateJWTSVID"), pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse
        )
        self.FetchWITSVID = grpclib.client.UnaryStreamMethod(
            channel, path("FetchWITSVID"), pb.WITSVIDRequest, pb.WITSVIDResponse
        )
        self.FetchWITBundles = grpclib.client.UnaryStreamMethod(
            channel, path("FetchWITBundles"), pb.WITBundlesRequest, pb.WITBundlesResponse
        )
