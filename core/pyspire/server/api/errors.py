"""gRPC errors of the server APIs, in one place.

Below the handlers the server raises only its own errors (:mod:`pyspire.server.errors`,
:mod:`pyspire.plugin.errors`); :func:`to_grpc` is where they become gRPC statuses. Plugin
errors keep their chosen code; an :class:`~pyspire.server.errors.AgentDenied` carries SPIRE's
``PermissionDeniedDetails`` (as a ``google.rpc.Status`` detail) because stock agents decide
from its reason whether to re-attest, retry or shut down.
"""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import PluginError
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.errors import AgentDenied

__all__ = ["status_message", "to_grpc"]


def to_grpc(err: PluginError) -> GRPCError:
    """The gRPC error a pyspire error becomes (same code numbers; an agent's reason as a detail)."""
    if isinstance(err, AgentDenied):
        details = [types_pb2.PermissionDeniedDetails(reason=err.reason.name)]
        return GRPCError(Status.PERMISSION_DENIED, err.message, details)
    return GRPCError(Status(err.code.value), err.message)


def status_message(code: Status, message: str) -> types_pb2.Status:
    """A batch item's outcome."""
    return types_pb2.Status(code=code.value, message=message)
