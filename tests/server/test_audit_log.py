"""``audit_log_enabled``: one audit line per API call, with the caller as SPIRE describes it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support.daemons import ServerDaemon, start_server
from tests.support.server_callers import METHODS, Callers, call_method, make_callers


def _audit_lines(server: ServerDaemon) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("type") == "audit"]


async def _call(callers: Callers, kind: str, method: str) -> str:
    channel = callers.channel(kind)
    try:
        code, _, _ = await call_method(channel, METHODS[method])
        return code
    finally:
        channel.close()


def test_each_call_is_audited_with_its_caller_and_outcome(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "server", extra='audit_log_enabled = true\n    log_format = "json"', log_level="INFO"
    )
    (tmp_path / "callers").mkdir()
    try:
        callers = asyncio.run(make_callers(server.socket_path, server.port, tmp_path / "callers"))
        before = len(_audit_lines(server))
        assert asyncio.run(_call(callers, "agent", "Entry.GetAuthorizedEntries")) == "OK"
        assert asyncio.run(_call(callers, "nobody", "Entry.ListEntries")) == "PERMISSION_DENIED"
        assert asyncio.run(_call(callers, "local", "Entry.ListEntries")) == "OK"
        agent_call, refused, local_call = _audit_lines(server)[before:]
    finally:
        server.stop()
    assert agent_call["method"] == "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries"
    assert agent_call["status"] == "success"
    assert agent_call["caller_id"].startswith("spiffe://example.org/spire/agent/join_token/")
    assert agent_call["caller_addr"] == "127.0.0.1"
    assert refused["status"] == "error"
    assert refused["status_code"] == 7  # PERMISSION_DENIED
    assert refused["caller_id"] == ""
    assert local_call["status"] == "success"
    assert local_call["caller_uid"] >= 0
    assert local_call["caller_path"]
    assert len({agent_call["request_id"], refused["request_id"], local_call["request_id"]}) == 3


def test_without_audit_log_enabled_no_audit_line_is_written(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", extra='log_format = "json"', log_level="DEBUG")
    (tmp_path / "callers").mkdir()
    try:
        callers = asyncio.run(make_callers(server.socket_path, server.port, tmp_path / "callers"))
        assert asyncio.run(_call(callers, "agent", "Entry.GetAuthorizedEntries")) == "OK"
        logged = server.log()
    finally:
        server.stop()
    assert not _audit_lines(server)
    assert '"msg": "API call"' in logged or '"message": "API call"' in logged  # the debug line, at DEBUG
