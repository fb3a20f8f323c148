"""Who may call what: every RPC of every server API, from each kind of caller, on both servers.

Each case calls one method with an empty request as one kind of caller (tests/support/
server_callers.py): the refusal (code and message) must be the same; where both servers let
the caller in, what the empty request then gets (an argument error, or a reply: its field
names are compared, the values are each server's own) must be the same too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.json_format import MessageToDict

from tests.support.daemons import ServerDaemon, start_server
from tests.support.differential import Side, assert_sides_answer_alike, documented_sections
from tests.support.server_callers import CALLER_KINDS, METHODS, Callers, call_method, make_callers, method_path

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
    """Call ``method`` with an empty request and record the answer (a reply by its field names)."""
    code, message, reply = await call_method(side.channel, method)
    outcome: dict[str, Any] = {"call": method_path(method), "code": code}
    if reply is not None:
        shown = MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        outcome["fields"] = sorted(shown)
    else:
        outcome["message"] = message
    if documented:
        assert documented in documented_sections(), f"docs/compatibility.md has no section {documented!r}"
        outcome = {"call": method_path(method), "documented": documented}
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
