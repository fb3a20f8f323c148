"""SPIRE's Logger service (local socket only): read and change the log level at runtime."""

from __future__ import annotations

import logging

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.context import ServerContext
from pyspire.telemetry.log_levels import level_from_proto, level_to_proto

__all__ = ["LoggerService"]

_SERVICE = "/spire.api.server.logger.v1.Logger/"


def _level(level: types_pb2.LogLevel) -> int:
    """The logging level of ``level``, or INVALID_ARGUMENT in SPIRE's words."""
    if level == types_pb2.LogLevel.UNSPECIFIED:
        raise GRPCError(Status.INVALID_ARGUMENT, "newLevel value cannot be LogLevel_UNSPECIFIED")
    try:
        return level_from_proto(level)
    except ValueError:
        raise GRPCError(Status.INVALID_ARGUMENT, "unsupported log level") from None


class LoggerService(logger_grpc.LoggerBase):
    """The Logger service; the launch level is the one configured at start."""

    def __init__(self, ctx: ServerContext, logger_name: str = "pyspire") -> None:
        """Manage the level of ``logger_name`` (and everything under it)."""
        self.ctx = ctx
        self._logger = logging.getLogger(logger_name)
        self._launch = self._logger.getEffectiveLevel()

    def _answer(self) -> types_pb2.Logger:
        return types_pb2.Logger(
            current_level=level_to_proto(self._logger.getEffectiveLevel()), launch_level=level_to_proto(self._launch)
        )

    @rpc(_SERVICE + "GetLogger")
    async def GetLogger(self, stream: ApiStream[logger_pb2.GetLoggerRequest, types_pb2.Logger], caller: Caller) -> None:
        await stream.request()
        await stream.send_message(self._answer())

    @rpc(_SERVICE + "SetLogLevel")
    async def SetLogLevel(
        self, stream: ApiStream[logger_pb2.SetLogLevelRequest, types_pb2.Logger], caller: Caller
    ) -> None:
        request = await stream.request()
        self._logger.setLevel(_level(request.new_level))
        await stream.send_message(self._answer())

    @rpc(_SERVICE + "ResetLogLevel")
    async def ResetLogLevel(
        self, stream: ApiStream[logger_pb2.ResetLogLevelRequest, types_pb2.Logger], caller: Caller
    ) -> None:
        await stream.request()
        self._logger.setLevel(self._launch)
        await stream.send_message(self._answer())
