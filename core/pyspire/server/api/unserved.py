"""What SPIRE's server answers for an API it does not serve: UNIMPLEMENTED, before any authorization.

SPIRE serves its Debug and Logger services on the admin socket only; over TCP gRPC answers that
it knows no such service. The WIT-SVID methods of spire-api-sdk are newer than the SPIRE
pyspire follows: SPIRE's gRPC does not know them, so it answers every caller that it knows no
such method, and so does pyspire. Both are gRPC's words, so that a client written for SPIRE
tells "not here" from "not allowed" the same way.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError

__all__ = ["UnservedServices", "unknown_method"]

_CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


def unknown_method(service: str, method: str) -> GRPCError:
    """The error gRPC gives for a method its server does not register."""
    return GRPCError(Status.UNIMPLEMENTED, f"unknown method {method} for service {service}")


class UnservedServices:
    """A grpclib servicer answering every method of ``services`` as an unknown service."""

    def __init__(self, *services: ServiceDescriptor) -> None:
        """Stand in for ``services`` (their descriptors) on a listener that does not serve them."""
        self._services = services

    def __mapping__(self) -> dict[str, Handler]:
        mapping = {}
        for service in self._services:

            async def refuse(stream: Any, name: str = service.full_name) -> None:
                raise GRPCError(Status.UNIMPLEMENTED, f"unknown service {name}")

            for method in service.methods:
                mapping[f"/{service.full_name}/{method.name}"] = Handler(
                    refuse,
                    _CARDINALITY[(method.client_streaming, method.server_streaming)],
                    GetMessageClass(method.input_type),
                    GetMessageClass(method.output_type),
                )
        return mapping
