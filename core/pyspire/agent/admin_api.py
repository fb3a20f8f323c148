"""The agent's admin socket (``admin_socket_path``): SPIRE's agent Debug and Logger APIs.

Only served when configured, on a socket of its own (0770 in a 0750 directory, as the
server's admin socket): what it reveals (the agent SVID chain, cache sizes) and what it changes
(the log level) are for the node's operators, not for workloads.
"""

from __future__ import annotations

import logging
import time

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.manager import SyncManager
from pyspire.agent.node import NodeIdentityManager
from pyspire.agent.rpc import typed_stream
from pyspire.debug_chain import debug_chain
from pyspire.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from pyspire.proto.spire.api.agent.logger.v1 import logger_grpc, logger_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.spiffe import SpiffeId, X509SvidError
from pyspire.telemetry.log_levels import level_from_proto, level_to_proto

__all__ = ["AgentDebugService", "AgentLoggerService"]


def _id(spiffe_id: SpiffeId) -> types_pb2.SPIFFEID:
    return types_pb2.SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


class AgentDebugService(debug_grpc.DebugBase):
    """GetInfo: the agent SVID chain, uptime, last successful sync, cache sizes."""

    def __init__(self, node: NodeIdentityManager, cache: WorkloadCache, manager: SyncManager) -> None:
        """Report on ``node``, ``cache`` and ``manager``."""
        self._node = node
        self._cache = cache
        self._manager = manager
        self._started = time.monotonic()

    @typed_stream
    async def GetInfo(self, stream: ApiStream[debug_pb2.GetInfoRequest, debug_pb2.GetInfoResponse]) -> None:
        await stream.request()
        identity = self._node.identity
        chain = []
        bundle = self._cache.bundle
        if identity is not None and bundle is not None:
            try:
                shown = debug_chain(identity.chain, bundle)
            except X509SvidError as err:
                raise GRPCError(Status.INTERNAL, f"failed to verify agent SVID: {err}") from None
            chain = [
                debug_pb2.GetInfoResponse.Cert(
                    id=_id(c.spiffe_id) if c.spiffe_id else None, expires_at=c.expires_at, subject=c.subject
                )
                for c in shown
            ]
        last = self._manager.last_success
        await stream.send_message(
            debug_pb2.GetInfoResponse(
                svid_chain=chain,
                uptime=int(time.monotonic() - self._started),
                last_sync_success=int(last.timestamp()) if last else 0,
                cached_x509_svids_count=self._cache.svid_count(),
                cached_jwt_svids_count=self._cache.jwt_count(),
            )
        )


class AgentLoggerService(logger_grpc.LoggerBase):
    """GetLogger, SetLogLevel, ResetLogLevel for the agent's ``pyspire`` loggers."""

    def __init__(self, logger_name: str = "pyspire") -> None:
        """Manage the level of ``logger_name`` and everything under it."""
        self._logger = logging.getLogger(logger_name)
        self._launch = self._logger.getEffectiveLevel()

    def _answer(self) -> types_pb2.Logger:
        return types_pb2.Logger(
            current_level=level_to_proto(self._logger.getEffectiveLevel()), launch_level=level_to_proto(self._launch)
        )

    @typed_stream
    async def GetLogger(self, stream: ApiStream[logger_pb2.GetLoggerRequest, types_pb2.Logger]) -> None:
        await stream.request()
        await stream.send_message(self._answer())

    @typed_stream
    async def SetLogLevel(self, stream: ApiStream[logger_pb2.SetLogLevelRequest, types_pb2.Logger]) -> None:
        request = await stream.request()
        try:
            self._logger.setLevel(level_from_proto(request.new_level))
        except ValueError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, str(err)) from None
        await stream.send_message(self._answer())

    @typed_stream
    async def ResetLogLevel(self, stream: ApiStream[logger_pb2.ResetLogLevelRequest, types_pb2.Logger]) -> None:
        await stream.request()
        self._logger.setLevel(self._launch)
        await stream.send_message(self._answer())
