"""SPIRE's Logger service (local socket only): read and change the log level at runtime."""

from __future__ import annotations

import logging
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.spire.api.server.logger.v1 import logger_grpc
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.context import ServerContext

__all__ = ["LoggerService", "level_from_proto", "level_to_proto"]

_SERVICE = "/spire.api.server.logger.v1.Logger/"
_TO_PROTO = {
    logging.DEBUG: types_pb2.DEBUG,
    logging.INFO: types_pb2.INFO,
    logging.WARNING: types_pb2.WARN,
    logging.ERROR: types_pb2.ERROR,
    logging.CRITICAL: types_pb2.FATAL,
}
_FROM_PROTO = {
    types_pb2.TRACE: logging.DEBUG,
    types_pb2.DEBUG: logging.DEBUG,
    types_pb2.INFO: logging.INFO,
    types_pb2.WARN: logging.WARNING,
    types_pb2.ERROR: logging.ERROR,
    types_pb2.FATAL: logging.CRITICAL,
    types_pb2.PANIC: logging.CRITICAL,
}


def level_to_proto(level: int) -> types_pb2.LogLevel:
    """A Python logging level as SPIRE's LogLevel."""
    return _TO_PROTO.get(level, types_pb2.INFO)


def level_from_proto(level: types_pb2.LogLevel) -> int:
    """SPIRE's LogLevel as a Python logging level."""
    if level not in _FROM_PROTO:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid log level {level}")
    return _FROM_PROTO[level]


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
    async def GetLogger(self, stream: Any, caller: Caller) -> None:
        await stream.recv_message()
        await stream.send_message(self._answer())

    @rpc(_SERVICE + "SetLogLevel")
    async def SetLogLevel(self, stream: Any, caller: Caller) -> None:
        request = await stream.recv_message()
        self._logger.setLevel(level_from_proto(request.new_level))
        await stream.send_message(self._answer())

    @rpc(_SERVICE + "ResetLogLevel")
    async def ResetLogLevel(self, stream: Any, caller: Caller) -> None:
        await stream.recv_message()
        self._logger.setLevel(self._launch)
        await stream.send_message(self._answer())
