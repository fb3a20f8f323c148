"""Who may call what: every RPC of every server API, from each kind of caller, on both servers.

Each case calls one method with an empty request as one kind of caller (tests/support/
server_callers.py): the refusal (code and message) must be the same; where both servers let
the caller in, what the empty request then gets (an argument error, or a reply: its field
names are compared, the values are each server's own) must be the same too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.json_format import MessageToDict
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from h2.exceptions import StreamClosedError
from pyspire.proto.spire.api.server.agent.v1 import agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_pb2
from pyspire.proto.spire.api.server.debug.v1 import debug_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_pb2
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_pb2
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2

from tests.support.daemons import ServerDaemon, start_server
from tests.support.differential import Side, assert_sides_answer_alike, documented_sections
from tests.support.server_callers import CALLER_KINDS, Callers, make_callers

MODULES = (agent_pb2, bundle_pb2, debug_pb2, entry_pb2, localauthority_pb2, logger_pb2, svid_pb2, trustdomain_pb2)
METHODS = {
    f"{service.name}.{method.name}": method
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}

_CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


DOCUMENTED = {("Agent.PostStatus", "agent"): "PostStatus"}
"""Cases answered differently on purpose: the section of docs/compatibility.md that says why."""


@pytest.fixture(scope="module")
def server_pair(tmp_path_factory: pytest.TempPathFactory, spire_server_bin: Path) -> Iterator[dict[str, ServerDaemon]]:
    """The pair without the attestation rate limit: every TCP caller attests in turn, at once.

    (The limits differ on purpose: docs/compatibility.md, "Rate limits refuse instead of waiting".)
    """
    directory = tmp_path_factory.mktemp("authorization")
    unlimited = "ratelimit {\n        attestation = false\n    }"
    spire = start_server(directory / "spire", executable=spire_server_bin, log_level="WARN", extra=unlimited)
    try:
        pyspire = start_server(directory / "pyspire", log_level="WARN", extra=unlimited)
    except BaseException:
        spire.stop()
        raise
    yield {"spire": spire, "pyspire": pyspire}
    pyspire.stop()
    spire.stop()


@pytest.fixture(scope="module")
def callers(server_pair: dict[str, ServerDaemon], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callers]:
    made = {}
    for name, daemon in server_pair.items():
        directory: Path = tmp_path_factory.mktemp(f"callers-{name}")
        made[name] = asyncio.run(make_callers(daemon.socket_path, daemon.port, directory))
    return made


async def _call_empty(side: Side, method: MethodDescriptor, documented: str = "") -> None:
    """Call ``method`` with an empty request (one, then the end of a client stream) and record the answer."""
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    cardinality = _CARDINALITY[(method.client_streaming, method.server_streaming)]
    outcome: dict[str, Any] = {"call": path}
    try:
        async with side.channel.request(path, cardinality, request_type, reply_type, timeout=15) as stream:
            await stream.send_message(request_type(), end=True)
            reply = await stream.recv_message()
            if method.server_streaming:
                with contextlib.suppress(StreamClosedError):  # the server may have ended it already
                    await stream.cancel()
    except GRPCError as err:
        outcome |= {"code": err.status.name, "message": err.message or ""}
    else:
        shown = MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        outcome |= {"code": "OK", "fields": sorted(shown) if reply is not None else None}
    if documented:
        assert documented in documented_sections(), f"docs/compatibility.md has no section {documented!r}"
        outcome = {"call": path, "documented": documented}
    side.records.append(outcome)


@pytest.mark.parametrize("kind", CALLER_KINDS)
@pytest.mark.parametrize("method_name", sorted(METHODS))
async def test_each_caller_kind_is_let_in_or_refused_as_by_spire(
    method_name: str, kind: str, callers: dict[str, Callers]
) -> None:
    method = METHODS[method_name]
    sides = {
        name: Side(name, reached.socket_path, connect=lambda reached=reached: reached.channel(kind))  # type: ignore[misc]
        for name, reached in callers.items()
    }

    async def case(side: Side) -> None:
        await _call_empty(side, method, DOCUMENTED.get((method_name, kind), ""))

    await assert_sides_answer_alike(case, sides)
