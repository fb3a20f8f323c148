"""The server's listeners: TCP with TLS for agents and admins, and the local admin socket.

Both serve SPIRE's six public services; the local socket also serves Debug, Logger and gRPC
health (SPIRE makes those local-only: over TCP, Debug and Logger are unknown services, as in
SPIRE). The socket's directory is created 0750 and the socket
0770, as SPIRE does; only local users in its group can reach the admin API.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from grpclib.encoding.proto import ProtoStatusDetailsCodec

from pyspire.proto.spire.api.server.debug.v1 import debug_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_pb2
from pyspire.server.api.agent import AgentService
from pyspire.server.api.bundle import BundleService
from pyspire.server.api.debug import DebugService
from pyspire.server.api.entry import EntryService
from pyspire.server.api.localauthority import LocalAuthorityService
from pyspire.server.api.logger import LoggerService
from pyspire.server.api.svid import SvidService
from pyspire.server.api.trustdomain import TrustDomainService
from pyspire.server.api.unserved import UnservedServices
from pyspire.server.context import ServerContext
from pyspire.telemetry.rpc import instrument
from pyspire.transport import GrpcServer, ServerTlsContexts, unix_socket_in_use

__all__ = ["Endpoints", "ListenError"]

_log = logging.getLogger(__name__)


class Endpoints:
    """Starts and stops the TCP and Unix-socket gRPC servers."""

    def __init__(self, ctx: ServerContext, tls: ServerTlsContexts, health: Any) -> None:
        """Serve ``ctx``'s services, with TLS from ``tls`` on TCP and the gRPC ``health`` service locally."""
        self._ctx = ctx
        self._tls = tls
        self._health = health
        self._servers: list[GrpcServer] = []
        self._socket_path = Path(ctx.config.server.socket_path)
        self._socket_bound = False

    def _public_services(self) -> list[Any]:
        ctx = self._ctx
        return [
            AgentService(ctx),
            EntryService(ctx),
            BundleService(ctx),
            SvidService(ctx),
            TrustDomainService(ctx),
            LocalAuthorityService(ctx),
        ]

    async def start(self) -> None:
        """Listen on both endpoints."""
        config = self._ctx.config.server
        codec = ProtoStatusDetailsCodec()
        metrics = self._ctx.metrics
        local_only = UnservedServices(
            debug_pb2.DESCRIPTOR.services_by_name["Debug"], logger_pb2.DESCRIPTOR.services_by_name["Logger"]
        )
        tcp = GrpcServer([*instrument(self._public_services(), metrics), local_only], status_details_codec=codec)
        try:
            await tcp.start_tcp(config.bind_address, config.bind_port, ssl=self._tls.listener)
        except OSError as err:
            address = f"{config.bind_address}:{config.bind_port}"
            raise ListenError(f"cannot listen on {address}: {err.strerror or err}") from None
        self._servers.append(tcp)
        _log.info(
            "Starting Server APIs", extra={"address": f"{config.bind_address}:{config.bind_port}", "network": "tcp"}
        )

        directory = self._socket_path.parent
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        if unix_socket_in_use(self._socket_path):
            raise ListenError(
                f"another process is serving on {self._socket_path}: stop it or choose another socket_path"
            )
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        local = GrpcServer(
            instrument(
                [*self._public_services(), DebugService(self._ctx), LoggerService(self._ctx), self._health], metrics
            ),
            status_details_codec=codec,
        )
        try:
            # SPIRE's mode: the group may administer.
            await local.start_unix(str(self._socket_path), 0o770)
        except OSError as err:
            raise ListenError(f"cannot listen on {self._socket_path}: {err.strerror or err}") from None
        self._socket_bound = True
        self._servers.append(local)
        _log.info("Starting Server APIs", extra={"address": str(self._socket_path), "network": "unix"})

    async def stop(self) -> None:
        """Stop accepting, end open streams (clients see UNAVAILABLE), remove the socket."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._socket_bound:
            self._socket_bound = False
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()


class ListenError(Exception):
    """A listener could not be opened (port taken, socket served by another process)."""
