"""gRPC errors of the server APIs, in one place.

Plugin errors keep their chosen code; PERMISSION_DENIED for agents carries SPIRE's
``PermissionDeniedDetails`` (as a ``google.rpc.Status`` detail) because stock agents decide
from its reason whether to re-attest, retry or shut down.
"""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import ErrorCode, PluginError
from pyspire.proto.spire.api.types import types_pb2

__all__ = ["Reason", "agent_denied", "from_plugin_error", "grpc_status", "status_message"]

Reason = types_pb2.PermissionDeniedDetails.Reason

_CODES = {code: Status(code.value) for code in ErrorCode}


def grpc_status(code: ErrorCode) -> Status:
    """The grpclib Status of a plugin error code (same numbers)."""
    return _CODES[code]


def from_plugin_error(err: PluginError) -> GRPCError:
    """The gRPC error a plugin error becomes."""
    return GRPCError(grpc_status(err.code), err.message)


def agent_denied(reason: types_pb2.PermissionDeniedDetails.Reason, message: str) -> GRPCError:
    """PERMISSION_DENIED with SPIRE's reason detail (AGENT_EXPIRED, AGENT_BANNED...)."""
    return GRPCError(Status.PERMISSION_DENIED, message, [types_pb2.PermissionDeniedDetails(reason=reason)])


def status_message(code: Status, message: str) -> types_pb2.Status:
    """A batch item's outcome."""
    return types_pb2.Status(code=code.value, message=message)
