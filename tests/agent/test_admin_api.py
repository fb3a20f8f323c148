"""The agent's admin socket: Debug.GetInfo and the Logger API, never on the workload socket."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from pyspire.proto.spire.api.agent.logger.v1 import logger_grpc, logger_pb2
from pyspire.proto.spire.api.types import types_pb2

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()


def test_admin_socket_reports_and_changes_the_log_level(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    admin = tmp_path / "agent-admin" / "admin.sock"
    alias = "spiffe://example.org/node/admin"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias), extra=f'admin_socket_path = "{admin}"')
    try:
        _entry(server, alias, "spiffe://example.org/counted", f"unix:uid:{UID}")
        eventually(lambda: x509_context(agent))
        assert stat.S_IMODE(admin.stat().st_mode) == 0o770
        assert stat.S_IMODE(admin.parent.stat().st_mode) == 0o750

        async def calls() -> tuple[debug_pb2.GetInfoResponse, types_pb2.Logger, types_pb2.Logger]:
            channel = Channel(path=str(admin))
            try:
                info = await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest(), timeout=10)
                logger = logger_grpc.LoggerStub(channel)
                changed = await logger.SetLogLevel(logger_pb2.SetLogLevelRequest(new_level=types_pb2.WARN), timeout=10)
                reset = await logger.ResetLogLevel(logger_pb2.ResetLogLevelRequest(), timeout=10)
                return info, changed, reset
            finally:
                channel.close()

        info, changed, reset = asyncio.run(calls())
        assert info.svid_chain[0].id.path.startswith("/spire/agent/join_token/")
        assert info.cached_x509_svids_count >= 1
        assert info.last_sync_success > 0
        assert changed.current_level == types_pb2.WARN
        assert reset.current_level == reset.launch_level == types_pb2.DEBUG

        async def debug_on_workload_socket() -> None:
            channel = Channel(path=str(agent.socket_path))
            try:
                await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest(), timeout=10)
            finally:
                channel.close()

        with pytest.raises(GRPCError) as raised:
            asyncio.run(debug_on_workload_socket())
        # grpclib answers an unknown method with a trailers-only 404 that clients see as
        # UNIMPLEMENTED or UNKNOWN: either way the workload socket has no Debug API.
        assert raised.value.status in (Status.UNIMPLEMENTED, Status.UNKNOWN)
        assert agent.stop() == 0
        assert not admin.exists()
    finally:
        agent.stop()
        server.stop()
