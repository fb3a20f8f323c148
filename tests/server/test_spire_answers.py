"""Answers pyspire-server gives as SPIRE v1.13 does, where the differential corpus found them apart.

Each row is one call from one kind of caller (tests/support/server_callers.py) and SPIRE's
status and message for it, as tests/interop/differential recorded them from spire-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.message import Message
from pyspire.proto.spire.api.server.debug.v1 import debug_pb2

from tests.support.daemons import ServerDaemon, start_server
from tests.support.server_callers import METHODS, Callers, call_method, make_callers

DENIED = "authorization denied for method /spire.api.server.entry.v1.Entry/ListEntries"
ANSWERS = [
    ("Entry.ListEntries", "nobody", "PERMISSION_DENIED", DENIED),
    ("Entry.ListEntries", "agent", "PERMISSION_DENIED", DENIED),
    ("Entry.ListEntries", "downstream", "PERMISSION_DENIED", DENIED),
    ("Debug.GetInfo", "admin", "UNIMPLEMENTED", "unknown service spire.api.server.debug.v1.Debug"),
    ("Logger.GetLogger", "agent", "UNIMPLEMENTED", "unknown service spire.api.server.logger.v1.Logger"),
    (
        "SVID.MintWITSVID",
        "nobody",
        "UNIMPLEMENTED",
        "unknown method MintWITSVID for service spire.api.server.svid.v1.SVID",
    ),
    (
        "SVID.MintWITSVID",
        "local",
        "UNIMPLEMENTED",
        "unknown method MintWITSVID for service spire.api.server.svid.v1.SVID",
    ),
    (
        "LocalAuthority.GetWITAuthorityState",
        "admin",
        "UNIMPLEMENTED",
        "unknown method GetWITAuthorityState for service spire.api.server.localauthority.v1.LocalAuthority",
    ),
    ("LocalAuthority.ActivateX509Authority", "local", "INVALID_ARGUMENT", "no authority ID provided"),
    ("LocalAuthority.TaintJWTAuthority", "local", "INVALID_ARGUMENT", "no authority ID provided"),
    (
        "LocalAuthority.RevokeX509Authority",
        "local",
        "INVALID_ARGUMENT",
        "invalid authority ID: no authority ID provided",
    ),
    (
        "LocalAuthority.TaintX509UpstreamAuthority",
        "local",
        "FAILED_PRECONDITION",
        "upstream authority is not configured",
    ),
    (
        "LocalAuthority.RevokeX509UpstreamAuthority",
        "admin",
        "FAILED_PRECONDITION",
        "upstream authority is not configured",
    ),
    ("Agent.AttestAgent", "nobody", "INVALID_ARGUMENT", "malformed param: missing params"),
    ("Agent.RenewAgent", "agent", "INVALID_ARGUMENT", "params cannot be nil"),
    ("Bundle.AppendBundle", "local", "INVALID_ARGUMENT", "no authorities to append"),
    ("Bundle.PublishJWTAuthority", "downstream", "INVALID_ARGUMENT", "missing JWT authority"),
    ("SVID.BatchNewX509SVID", "agent", "INVALID_ARGUMENT", "missing parameters"),
    ("SVID.NewJWTSVID", "agent", "NOT_FOUND", "entry not found or not authorized"),
    ("Logger.SetLogLevel", "local", "INVALID_ARGUMENT", "newLevel value cannot be LogLevel_UNSPECIFIED"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    daemon = start_server(directory, log_level="WARN", extra="ratelimit {\n attestation = false\n }")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def callers(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Callers:
    return asyncio.run(make_callers(server.socket_path, server.port, tmp_path_factory.mktemp("callers")))


async def _answer(callers: Callers, method: str, kind: str) -> tuple[str, str, Message | None]:
    channel = callers.channel(kind)
    try:
        return await call_method(channel, METHODS[method])
    finally:
        channel.close()


@pytest.mark.parametrize(("method", "kind", "code", "message"), ANSWERS, ids=[f"{m}-{k}" for m, k, _, _ in ANSWERS])
async def test_answers_as_spire_does(callers: Callers, method: str, kind: str, code: str, message: str) -> None:
    assert (await _answer(callers, method, kind))[:2] == (code, message)


async def test_debug_info_counts_the_servers_own_bundle(callers: Callers) -> None:
    """SPIRE's federated_bundles_count counts every bundle the server holds, its own too."""
    code, _, reply = await _answer(callers, "Debug.GetInfo", "local")
    assert code == "OK"
    assert isinstance(reply, debug_pb2.GetInfoResponse)
    assert reply.federated_bundles_count == 1
