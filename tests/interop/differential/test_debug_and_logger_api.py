"""The server's Debug and Logger APIs (admin socket only), differentially.

GetInfo is compared by what does not depend on each server's keys or start time: the chain's
length, the SPIFFE IDs and subjects of its certificates, whether expiries are set, the counts
(SPIRE caches the answer for a few seconds, so it is read once, before anything is created).
The Logger cases set every level and read it back; the launch level is the configured one.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pyspire.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon
from tests.support.differential import Side, assert_same_answers

_SERIAL = re.compile(r"SERIALNUMBER=\d+")
"""A CA's subject carries a serial number the server drew at random."""


def _info(reply: debug_pb2.GetInfoResponse) -> dict[str, Any]:
    return {
        "chain": [
            {
                "id": f"spiffe://{c.id.trust_domain}{c.id.path}" if c.HasField("id") else None,
                "subject": _SERIAL.sub("SERIALNUMBER=<serial>", c.subject),
            }
            for c in reply.svid_chain
        ],
        "expiries set": [c.expires_at > 0 for c in reply.svid_chain],
        "agents": reply.agents_count,
        "entries": reply.entries_count,
        "bundles": reply.federated_bundles_count,
    }


async def test_get_info_answers_as_spire_does(server_pair: dict[str, ServerDaemon]) -> None:
    async def case(side: Side) -> None:
        reply = await side.call(debug_grpc.DebugStub(side.channel).GetInfo, debug_pb2.GetInfoRequest(), record=False)
        assert reply is not None
        side.note("info", _info(reply))

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})


LEVELS = [name for name, _ in types.LogLevel.items() if name != "UNSPECIFIED"]
LOGGER_STEPS: dict[str, list[logger_pb2.SetLogLevelRequest | str]] = {
    **{
        f"set {level}": [logger_pb2.SetLogLevelRequest(new_level=types.LogLevel.Value(level)), "get"]
        for level in LEVELS
    },
    "set unspecified": [logger_pb2.SetLogLevelRequest(new_level=types.LogLevel.UNSPECIFIED)],
    "set out of range": [logger_pb2.SetLogLevelRequest(new_level=99)],  # type: ignore[arg-type]
    "set then reset": [logger_pb2.SetLogLevelRequest(new_level=types.LogLevel.DEBUG), "reset", "get"],
    "get": ["get"],
    "reset": ["reset"],
}


@pytest.mark.parametrize("name", LOGGER_STEPS)
async def test_logger_answers_as_spire_does(name: str, server_pair: dict[str, ServerDaemon]) -> None:
    async def case(side: Side) -> None:
        stub = logger_grpc.LoggerStub(side.channel)
        for step in LOGGER_STEPS[name]:
            if step == "get":
                await side.call(stub.GetLogger, logger_pb2.GetLoggerRequest())
            elif step == "reset":
                await side.call(stub.ResetLogLevel, logger_pb2.ResetLogLevelRequest())
            else:
                assert isinstance(step, logger_pb2.SetLogLevelRequest)
                await side.call(stub.SetLogLevel, step)
        await side.call(stub.ResetLogLevel, logger_pb2.ResetLogLevelRequest(), record=False)

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})
