"""On PostgreSQL a server checks each agent call against a node read awaited on its event loop.

The read is made through connections of its own (``pg_stat_activity`` names them), so these
tests look for them there: a server that had fallen back to its worker threads for good would
still serve agents, only at several times the CPU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509
from pyspire.plugin.builtin.sql.postgres_reads import APPLICATION_NAME
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.support.daemons import start_server
from tests.support.databases import postgres_connections_named, postgres_database
from tests.support.server_callers import METHODS, Callers, call_method, make_callers


def _loop_read_connections(dsn: str, expected: int) -> int:
    return postgres_connections_named(dsn, APPLICATION_NAME, expected)


async def _agent_call(callers: Callers) -> tuple[str, str]:
    channel = callers.channel("agent")
    try:
        code, message, _ = await call_method(channel, METHODS["Entry.GetAuthorizedEntries"])
    finally:
        channel.close()
    return code, message


def test_agent_calls_are_checked_on_the_loop_and_a_ban_is_seen_by_the_next_call(tmp_path: Path) -> None:
    with postgres_database() as dsn:
        server = start_server(tmp_path / "server", datastore=("postgres", dsn))
        try:
            (tmp_path / "callers").mkdir()
            callers = asyncio.run(make_callers(server.socket_path, server.port, tmp_path / "callers"))
            assert _loop_read_connections(dsn, 0) == 0  # attesting and minting made no agent check
            assert [asyncio.run(_agent_call(callers)) for _ in range(3)] == [("OK", "")] * 3
            assert _loop_read_connections(dsn, 1) == 1  # one at a time: one connection, kept
            agent_id = leaf_spiffe_id(x509.load_der_x509_certificate(callers.identities["agent"].chain[0]))
            server.cli("agent", "ban", "-spiffeID", str(agent_id))
            code, message = asyncio.run(_agent_call(callers))
            assert code == "PERMISSION_DENIED", message
            assert "is banned" in message
        finally:
            server.stop()
        assert _loop_read_connections(dsn, 0) == 0  # closed as the server stopped
        assert "Traceback" not in server.log()
