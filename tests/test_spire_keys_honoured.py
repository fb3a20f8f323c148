"""SPIRE keys that used to be parsed and never read, honoured by real daemons.

One server and one agent carry them all: the server's full cache reloads, the agent's
choice of entry-sync RPC, bundles for callers without an identity, and where each log line
was logged (the server's ``log_source_location``, the agent's ``-logSourceLocation``). (The telemetry keys
are the telemetry tests'.)
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from pyspire.spiffe import TrustDomain
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, server_config
from tests.support.free_port import free_port
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

TD = TrustDomain.parse("example.org")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    text, socket_path, port = server_config(
        directory, extra='log_source_location = true\nexperimental {\n  full_cache_reload_interval = "1s"\n}'
    )
    metrics_port = free_port()
    text += f'telemetry {{\n  Prometheus {{\n    host = "127.0.0.1"\n    port = {metrics_port}\n  }}\n}}\n'
    daemon = ServerDaemon("pyspire-server", directory, socket_path, text)
    daemon.port = port
    daemon.metrics_port = metrics_port  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def agent(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    directory = tmp_path_factory.mktemp("agent")
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    text, socket_path = agent_config(directory, server, extra="allow_unauthenticated_verifiers = true")
    daemon_flags = ["-joinToken", server.join_token(alias), "-logSourceLocation"]
    text = text.replace('sync_interval = "1s"', 'sync_interval = "1s"\n        use_sync_authorized_entries = false')
    daemon = AgentDaemon("pyspire-agent", directory, socket_path, text, daemon_flags)
    daemon.alias = alias  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    daemon.stop()


def test_a_caller_without_identity_gets_the_own_bundle_when_unauthenticated_verifiers_are_allowed(
    agent: AgentDaemon,
) -> None:
    """First in the module: this process matches no entry yet."""

    async def fetch() -> tuple[set[str], set[str]]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            with pytest.raises(WorkloadApiError, match="no identity issued"):
                await client.fetch_x509_context()
            x509 = await client.fetch_x509_bundles()
            jwt = await client.fetch_jwt_bundles()
        return {td.name for td in x509.trust_domains()}, {td.name for td in jwt.trust_domains()}

    # Retried until the agent's first sync brought the bundle (a loaded machine may answer
    # before it); without the key the bundles stay refused, and this times out.
    assert eventually(lambda: asyncio.run(fetch())) == ({"example.org"}, {"example.org"})


def test_full_cache_reload_interval_rebuilds_the_caches_from_the_datastore(server: ServerDaemon) -> None:
    eventually(lambda: server.log().count('msg="Caches loaded"') >= 3, timeout=15)


def test_use_sync_authorized_entries_false_syncs_with_get_authorized_entries(
    server: ServerDaemon, agent: AgentDaemon
) -> None:
    register_this_process(server, agent.alias, "spiffe://example.org/keys/workload")  # type: ignore[attr-defined]
    assert fetched_spiffe_id(agent) == "spiffe://example.org/keys/workload"
    text = scrape(server.metrics_port)  # type: ignore[attr-defined]
    assert re.search(r"^spire_server_rpc_entry_v1_entry_get_authorized_entries\{", text, re.M), text
    assert "sync_authorized_entries" not in text
    assert 'use_sync_authorized_entries\\" is deprecated' in agent.log()


def test_log_source_location_puts_the_caller_in_every_line(server: ServerDaemon, agent: AgentDaemon) -> None:
    for daemon in (server, agent):
        lines = [line for line in daemon.log().splitlines() if line.startswith("time=")]
        assert lines, daemon.log()
        caller = re.compile(r' msg=(?:"(?:[^"\\]|\\.)*"|\S+) func=[\w.]+ file="/[^"]+\.py:\d+"')
        assert all(caller.search(line) for line in lines), [line for line in lines if not caller.search(line)][:3]
