"""Two servers on one PostgreSQL or MariaDB database, and an agent that knows both.

Each server keeps its own CA key; the one bundle in the database holds both authorities.
What one server writes (entries, nodes, spent join tokens) the other serves within seconds.
One server is stopped in the middle of the run: the agent moves to the other, new entries
still reach workloads, SVIDs keep rotating, and nothing is lost or counted twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, X509Svid, verify_x509_svid
from pyspire.spiffe.workloadapi import X509Context

from tests.support.daemons import AgentDaemon, Daemon, ServerDaemon, agent_config, start_server
from tests.support.databases import mariadb_database, postgres_database
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process, x509_context

T = TypeVar("T")
TD = TrustDomain.parse("example.org")
BACKDATE = 10  # seconds: the server backdates notBefore against clock skew


@pytest.fixture(params=["postgres", "mysql"])
def shared_datastore(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(database_type, connection_string) of a fresh database both servers use."""
    database = postgres_database() if request.param == "postgres" else mariadb_database()
    with database as dsn:
        yield request.param, dsn


def _bundle(server: ServerDaemon) -> Bundle:
    return Bundle.parse_x509(TD, server.bundle_pem().encode())


def _agent(directory: Path, server: ServerDaemon, token: str, server_address: str = "127.0.0.1") -> AgentDaemon:
    text, socket_path = agent_config(directory, server, server_address=server_address)
    return AgentDaemon("pyspire-agent", directory, socket_path, text, ["-joinToken", token])


def test_two_servers_share_one_database_and_survive_losing_one(
    shared_datastore: tuple[str, str], tmp_path: Path
) -> None:
    started: list[Daemon] = []
    try:
        first = start_server(tmp_path / "first", datastore=shared_datastore)
        started.append(first)
        second = start_server(tmp_path / "second", datastore=shared_datastore)
        started.append(second)
        # Each server has its own CA; both are in the one bundle, whichever server is asked.
        assert first.x509_authority_id() != second.x509_authority_id()
        eventually(lambda: len(_bundle(first).x509_authorities) == 2 and _bundle(first) == _bundle(second), timeout=30)

        # A join token made on one server is spent once, whichever servers the agents race to.
        token = first.join_token()
        racers = [
            _agent(tmp_path / "racer-first", first, token),
            _agent(tmp_path / "racer-second", second, token),
        ]
        started += racers
        for racer in racers:
            racer.start(wait=False)
        exited = eventually(
            lambda: [r for r in racers if r.process is not None and r.process.poll() is not None], timeout=30
        )
        assert len(exited) == 1
        assert exited[0].process is not None
        assert exited[0].process.returncode == 1
        assert "refused attestation" in exited[0].log()
        winner = next(r for r in racers if r not in exited)
        winner.wait_ready()

        # An agent that knows both servers, registered through the second, fetched through the first.
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        both = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
        agent = _agent(tmp_path / "agent", first, second.join_token(alias), server_address=both)
        started.append(agent)
        agent.start()
        register_this_process(second, alias, "spiffe://example.org/before", "-x509SVIDTTL", "20")
        before = eventually(lambda: x509_context(agent), timeout=30)
        assert [str(s.spiffe_id) for s in before.svids] == ["spiffe://example.org/before"]

        # The first server goes away. Entries made on the second still arrive...
        stopped_at = time.time()
        assert first.stop() == 0
        register_this_process(second, alias, "spiffe://example.org/after", "-x509SVIDTTL", "20")

        second_ca = second.x509_authority_id()

        def signed_by(svid: X509Svid, authority_id: str) -> bool:
            identifier = svid.leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            return identifier.key_identifier is not None and identifier.key_identifier.hex() == authority_id

        def both_ids_renewed_by_the_second() -> X509Context | None:
            context = x509_context(agent)
            ids = sorted(str(s.spiffe_id) for s in context.svids)
            renewed = all(
                s.leaf.not_valid_before_utc.timestamp() + BACKDATE > stopped_at and signed_by(s, second_ca)
                for s in context.svids
            )
            return context if renewed and ids == ["spiffe://example.org/after", "spiffe://example.org/before"] else None

        # ...and the SVIDs keep rotating (20 s TTL: renewed at half-life), now signed by the second.
        after = eventually(both_ids_renewed_by_the_second, timeout=60)
        for svid in after.svids:
            verify_x509_svid(svid.chain, BundleSet([_bundle(second)]))
        assert "trying the next server" in agent.log()

        # Nothing lost, nothing twice: the two entries and the node alias, the two agents that attested.
        entries = second.cli("entry", "show").stdout
        assert entries.count("Entry ID") == 3
        for spiffe_id in ("spiffe://example.org/before", "spiffe://example.org/after", alias):
            assert entries.count(f"SPIFFE ID        : {spiffe_id}\n") == 1
        listed = second.cli("agent", "list").stdout
        agent_ids = [line.split(": ", 1)[1] for line in listed.splitlines() if line.startswith("SPIFFE ID")]
        assert len(agent_ids) == 2
        assert len(set(agent_ids)) == 2
    finally:
        for daemon in reversed(started):
            daemon.stop()
