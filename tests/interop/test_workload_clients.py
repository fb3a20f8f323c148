"""Scenario 4: go-spiffe, java-spiffe and py-spiffe workloads against pyspire-agent and spire-agent.

One pyspire-server, one agent of each implementation, and for every client an entry under
both agents selecting it by its executable (``unix:path``), so the three are distinct
workloads. Each client runs as its own process through its library's sources (X509Source,
JWTSource, spiffetls/tlsconfig, java-spiffe's provider, spiffe-tls). Every check is made
against both agents, and the two agents must give the clients the same results.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.peer_workloads import PeerWorkload
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TD = "example.org"
UNIX = "discover_workload_path = true\n            workload_size_limit = -1"


@dataclass
class Fleet:
    server: ServerDaemon
    agents: dict[str, AgentDaemon]
    clients: dict[str, PeerWorkload]

    @staticmethod
    def spiffe_id(client: str) -> str:
        return f"spiffe://{TD}/{client}-workload"


def _executable(client: PeerWorkload) -> str:
    """The path the unix attestor finds for the client's process (/proc/<pid>/exe)."""
    if client.name == "java-spiffe":
        return os.path.realpath(shutil.which("java") or "java")
    if client.name == "py-spiffe":
        return os.path.realpath(sys.executable)
    return os.path.realpath(client.argv[0])


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, spire_agent_bin: Path, workload_clients: dict[str, PeerWorkload]
) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("clients")
    server = start_server(directory / "server")
    agents: dict[str, AgentDaemon] = {}
    try:
        for kind, executable in (("pyspire-agent", None), ("spire-agent", spire_agent_bin)):
            alias = f"spiffe://{TD}/node/{kind}-{uuid.uuid4()}"
            agents[kind] = start_agent(
                directory / kind, server, server.join_token(alias), executable=executable, unix_data=UNIX
            )
            for name, client in workload_clients.items():
                server.cli(
                    "entry", "create", "-parentID", alias, "-spiffeID", Fleet.spiffe_id(name),
                    "-selector", f"unix:path:{_executable(client)}", "-x509SVIDTTL", "12",
                )  # fmt: skip
        yield Fleet(server, agents, workload_clients)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def _each(jobs: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """Run the callables of ``jobs`` side by side (JVM and Go start-ups overlap); their results by key."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def test_x509_sources_follow_rotation(fleet: Fleet) -> None:
    seen = _each(
        {
            (kind, name): (lambda a=agent, c=client: _lines(c, a))
            for kind, agent in fleet.agents.items()
            for name, client in fleet.clients.items()
        }
    )
    summaries: dict[str, dict[str, Any]] = {}
    for (kind, name), (first, second) in seen.items():
        assert first["spiffe_id"] == second["spiffe_id"] == Fleet.spiffe_id(name), (kind, name, first)
        assert first["verified"] is True, (kind, name, first)
        assert second["verified"] is True, (kind, name, second)
        assert first["serial"] != second["serial"], (kind, name)
        assert second["not_after"] >= first["not_after"]
        summaries.setdefault(name, {})[kind] = (first["spiffe_id"], first["chain_length"], first["bundle_authorities"])
    for name, by_agent in summaries.items():
        assert by_agent["pyspire-agent"] == by_agent["spire-agent"], name


def _lines(client: PeerWorkload, agent: AgentDaemon) -> tuple[dict[str, Any], dict[str, Any]]:
    eventually(lambda: client.run(agent, "x509", "-updates", "1", "-timeout", "10"), timeout=60, interval=1)
    running = client.start(agent, "x509", "-updates", "2", "-timeout", "60")
    try:
        return running.next_line(60), running.next_line(60)
    finally:
        running.stop()


def test_jwt_svids_are_fetched_and_validated_by_every_client(fleet: Fleet) -> None:
    audience = "interop-jwt"
    fetched = _each(
        {
            (kind, name): (
                lambda a=agent, c=client: eventually(lambda: c.run(a, "jwt", "-audience", audience), timeout=60)
            )
            for kind, agent in fleet.agents.items()
            for name, client in fleet.clients.items()
        }
    )
    for (kind, name), result in fetched.items():
        assert result["spiffe_id"] == result["validated_locally"] == Fleet.spiffe_id(name), (kind, name)
        assert result["audience"] == [audience], (kind, name)
    # Each client validates another's token through its agent's ValidateJWTSVID, and a token
    # from one agent through the other agent: one trust domain, one set of JWT authorities.
    names = list(fleet.clients)
    jobs = {}
    for kind, agent in fleet.agents.items():
        other = next(k for k in fleet.agents if k != kind)
        for i, name in enumerate(names):
            token = fetched[(other, names[(i + 1) % len(names)])]["token"]
            jobs[(kind, name)] = partial(
                fleet.clients[name].run, agent, "validate", "-audience", audience, "-token", token
            )
    validated = _each(jobs)
    by_agent: dict[str, list[Any]] = {}
    for (kind, name), result in sorted(validated.items()):
        expected = Fleet.spiffe_id(names[(names.index(name) + 1) % len(names)])
        assert result["spiffe_id"] == expected, (kind, name, result)
        assert result["audience"] == [audience]
        by_agent.setdefault(kind, []).append((name, result["spiffe_id"], result["claims"]))
    assert by_agent["pyspire-agent"] == by_agent["spire-agent"]


def test_mtls_between_workloads_of_every_client(fleet: Fleet) -> None:
    names = list(fleet.clients)
    # go serves java, java serves py, py serves go; on each agent, and across the two agents.
    pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    routes = [(kind, kind) for kind in fleet.agents] + [
        ("pyspire-agent", "spire-agent"),
        ("spire-agent", "pyspire-agent"),
    ]

    def exchange(
        serving: str, dialing: str, server_agent: str, client_agent: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        server_id, client_id = Fleet.spiffe_id(serving), Fleet.spiffe_id(dialing)
        for kind, name in ((server_agent, serving), (client_agent, dialing)):
            eventually(lambda k=kind, n=name: fleet.clients[n].run(fleet.agents[k], "x509"), timeout=60, interval=1)
        listener = fleet.clients[serving].start(fleet.agents[server_agent], "serve", "-authorize", client_id)
        try:
            ready = listener.next_line(60)
            assert ready["spiffe_id"] == server_id
            dialed = fleet.clients[dialing].run(
                fleet.agents[client_agent], "dial", "-address", ready["listening"], "-authorize", server_id
            )
            return dialed, listener.next_line(30)
        finally:
            listener.stop()

    results = _each(
        {
            (f"{serving}<-{dialing}", f"{a}<-{b}"): (lambda s=serving, d=dialing, x=a, y=b: exchange(s, d, x, y))
            for serving, dialing in pairs
            for a, b in routes
        }
    )
    for (pair, route), (dialed, served) in results.items():
        serving, dialing = pair.split("<-")
        assert dialed["server"] == Fleet.spiffe_id(serving), (pair, route)
        assert served["client"] == Fleet.spiffe_id(dialing), (pair, route)
        assert dialed["reply"] == f"{Fleet.spiffe_id(serving)} answers {Fleet.spiffe_id(dialing)}: ping", (pair, route)
