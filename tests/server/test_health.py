"""``healthcheck`` and ``/ready`` say what the datastore can do, on a real server and PostgreSQL.

Regression: both said healthy while the database could be read but refused every write.
SPIRE's health service reads the bundle on every check (a cut connection is NOT_SERVING);
pyspire also reports a datastore whose writes fail (gRPC health, and its own readiness check
``datastore_writes``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import ServerDaemon, server_config
from tests.support.databases import POSTGRES, postgres_database
from tests.support.free_port import free_port
from tests.support.server_callers import METHODS, Callers, call_method, make_callers
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import eventually


def _server(directory: Path, dsn: str) -> ServerDaemon:
    """A server on ``dsn`` with the HTTP health listener on; its ``health_port`` is set."""
    port = free_port()
    text, socket_path, tcp_port = server_config(directory, datastore=("postgres", dsn))
    text += f'\nhealth_checks {{\n    listener_enabled = true\n    bind_address = "127.0.0.1"\n    bind_port = "{port}"\n}}\n'
    server = ServerDaemon("pyspire-server", directory, socket_path, text)
    server.port = tcp_port
    server.health_port = port  # type: ignore[attr-defined]
    return server


def _healthy(server: ServerDaemon) -> bool:
    return server.cli("healthcheck", check=False).returncode == 0


def _ready(server: ServerDaemon) -> tuple[int, dict[str, dict[str, str]]]:
    """The HTTP status of ``/ready`` and its details by check."""
    url = f"http://127.0.0.1:{server.health_port}/ready"  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(json.loads(response.read()))
    except urllib.error.HTTPError as err:
        return err.code, dict(json.loads(err.read()))


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_database() as dsn:
        yield dsn


def test_a_server_that_cannot_read_its_database_is_unhealthy(database: str, tmp_path: Path) -> None:
    relay = TcpRelay(("127.0.0.1", 5432)).restore()
    server = _server(tmp_path / "server", database.replace("port=5432", f"port={relay.port}")).start()
    try:
        assert _healthy(server)
        relay.cut()
        assert not _healthy(server)
        assert "unable to fetch bundle" in server.log()
        relay.restore()
        assert eventually(lambda: _healthy(server), timeout=30)
    finally:
        server.stop()
        relay.cut()


def _read_only(dsn: str, read_only: bool) -> None:
    """Make the database refuse (or accept again) writes in every session, the server's included."""
    psycopg = pytest.importorskip("psycopg")
    name = dsn.rsplit("dbname=", 1)[1]
    with psycopg.connect(**POSTGRES, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if read_only else "off"}')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def test_a_server_whose_database_refuses_writes_is_unhealthy_until_it_accepts_them(
    database: str, tmp_path: Path
) -> None:
    server = _server(tmp_path / "server", database).start()
    try:
        assert _healthy(server)
        _read_only(database, read_only=True)
        refused = server.cli("token", "generate", check=False)
        assert refused.returncode != 0
        assert not _healthy(server)  # the bundle can still be read: SPIRE's check alone would pass
        assert "the datastore refused a write" in server.log()
        status, details = _ready(server)
        assert status == 500
        assert "read-only" in details["datastore_writes"]["write_err"]
        assert details["catalog.datastore"] == {}  # SPIRE's check reads, and reading works

        _read_only(database, read_only=False)
        assert eventually(lambda: _healthy(server), timeout=30)  # seen without waiting for a real write
        assert _ready(server) == (
            200,
            {"server": {}, "catalog.datastore": {}, "server.ca": {}, "server.ca.rotator": {}, "datastore_writes": {}},
        )
        assert "Token: " in server.cli("token", "generate").stdout
        assert "Traceback" not in server.log()
    finally:
        server.stop()


async def _agent_calls(callers: Callers, count: int) -> list[str]:
    codes = []
    for _ in range(count):
        channel = callers.channel("agent")
        try:
            code, _, _ = await call_method(channel, METHODS["Entry.GetAuthorizedEntries"])
        finally:
            channel.close()
        codes.append(code)
    return codes


def test_agent_calls_do_not_pass_for_writes_while_the_database_refuses_them(database: str, tmp_path: Path) -> None:
    # Regression: the node lookup every agent call makes (read_attested_node_at_once) was
    # counted as a successful write, so each agent call cleared the failure and logged
    # "Datastore writes succeed again" while every write was still refused.
    server = _server(tmp_path / "server", database).start()
    (tmp_path / "callers").mkdir()
    try:
        callers = asyncio.run(make_callers(server.socket_path, server.port, tmp_path / "callers"))
        _read_only(database, read_only=True)
        assert server.cli("token", "generate", check=False).returncode != 0
        assert "Datastore write failed" in server.log()
        assert asyncio.run(_agent_calls(callers, 3)) == ["OK"] * 3  # reads work: the agent is served
        assert "Datastore writes succeed again" not in server.log()
        status, details = _ready(server)
        assert status == 500
        assert "read-only" in details["datastore_writes"]["write_err"]
    finally:
        _read_only(database, read_only=False)
        server.stop()
