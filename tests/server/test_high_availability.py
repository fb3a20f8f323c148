"""Two servers on one PostgreSQL or MariaDB database, and an agent that knows both.

Each server keeps its own CA key; the one bundle in the database holds both authorities.
What one server writes (entries, nodes, spent join tokens) the other serves within seconds.
One server is stopped in the middle of the run: the agent moves to the other, new entries
still reach workloads, SVIDs keep rotating, and nothing is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, X509Svid, verify_x509_svid
from pyspire.spiffe.workloadapi import X509Context
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.server.test_api_security import attest
from tests.support.daemons import AgentDaemon, Daemon, ServerDaemon, agent_config, start_server
from tests.support.databases import mariadb_database, postgres_database
from tests.support.tcp_relay import TcpRelay
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


# --- a server cut off from the shared database --------------------------------------------


class _Agent:
    """This process, attested as an agent through one server, calling it on one event loop."""

    def __init__(self, server: ServerDaemon, token: str) -> None:
        self._loop = asyncio.Runner()
        self.client, chain = self._loop.run(attest(server, token))
        self.spiffe_id = str(leaf_spiffe_id(chain[0]))

    def new_svid(self, entry_id: str) -> tuple[bool, str]:
        """(issued, why not) for one BatchNewX509SVID call; a refused call gives its status."""

        async def run() -> tuple[bool, str]:
            csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
            try:
                [(_, svid, message)] = await self.client.new_x509_svids([(entry_id, csr)])
            except GRPCError as err:
                return False, f"{err.status.name}: {err.message}"
            return svid is not None, message

        return self._loop.run(run())

    def entry_ids(self) -> dict[str, str]:
        """Entry ID to SPIFFE ID of every entry the server says this agent may see (a full sync)."""
        entries = self._loop.run(self.client.sync_entries({}))
        return {entry.id: str(entry.spiffe_id) for entry in entries}

    def close(self) -> None:
        self.client.close()
        self._loop.close()


@pytest.fixture
def cut_off_pair(tmp_path: Path) -> Iterator[tuple[ServerDaemon, TcpRelay, Path, str]]:
    """A PostgreSQL database, server A on it directly, and the relay and DSN server B is to use."""
    with postgres_database() as dsn:
        relay = TcpRelay(("127.0.0.1", 5432)).restore()
        first = start_server(tmp_path / "first", datastore=("postgres", dsn))
        try:
            yield first, relay, tmp_path, dsn.replace("port=5432", f"port={relay.port}")
        finally:
            first.stop()
            relay.cut()


def _signing_through(first: ServerDaemon, second: ServerDaemon) -> tuple[_Agent, str]:
    """An agent attested through ``second`` (its node record written by ``second``) and an entry
    it has had ``second`` sign, registered through ``first``."""
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = _Agent(second, first.join_token(alias))
    out = first.cli(
        "entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/workload", "-selector", "unix:uid:1"
    ).stdout
    entry_id = out.split("Entry ID         : ", 1)[1].split()[0]
    eventually(lambda: agent.new_svid(entry_id)[0], timeout=30)
    return agent, entry_id


def test_a_server_cut_off_from_the_database_refuses_an_agent_banned_through_another(
    cut_off_pair: tuple[ServerDaemon, TcpRelay, Path, str],
) -> None:
    """Regression: server B, cut off from PostgreSQL, kept signing for an agent banned through
    server A (5 of 5): it trusted its cached node record. As SPIRE (max_attested_node_info_staleness
    = 0), each agent call reads the node record, and one that cannot be read is refused."""
    first, relay, directory, relayed_dsn = cut_off_pair
    second = start_server(directory / "second", datastore=("postgres", relayed_dsn))
    try:
        agent, entry_id = _signing_through(first, second)
        relay.cut()
        first.cli("agent", "ban", "-spiffeID", agent.spiffe_id)
        try:
            for _ in range(5):
                issued, why = agent.new_svid(entry_id)
                assert not issued
                assert why.startswith("INTERNAL: unable to look up agent information"), why
            # The database comes back: the ban is seen, and the agent is told it is banned.
            relay.restore()

            def banned() -> str | None:
                _, why = agent.new_svid(entry_id)
                return why if "is banned" in why else None

            assert eventually(banned).startswith("PERMISSION_DENIED")
        finally:
            agent.close()
        assert "Traceback" not in second.log()
    finally:
        second.stop()


@pytest.mark.slow
def test_max_attested_node_info_staleness_bounds_what_a_cut_off_server_accepts(
    cut_off_pair: tuple[ServerDaemon, TcpRelay, Path, str],
) -> None:
    """With SPIRE's ``max_attested_node_info_staleness`` a server may answer agents from its cache,
    but only while the cache matched the datastore that recently."""
    first, relay, directory, relayed_dsn = cut_off_pair
    second = start_server(
        directory / "second", datastore=("postgres", relayed_dsn), extra='max_attested_node_info_staleness = "5s"'
    )
    try:
        agent, entry_id = _signing_through(first, second)
        relay.cut()
        cut_at = time.monotonic()
        try:
            # Its cache matched the database at most a poll (1 s) before the cut: it still serves...
            issued, why = agent.new_svid(entry_id)
            assert issued, why
            # ...even once the agent is banned elsewhere, but no longer than the staleness allowed.
            first.cli("agent", "ban", "-spiffeID", agent.spiffe_id)
            time.sleep(max(0.0, cut_at + 5.5 - time.monotonic()))
            issued, why = agent.new_svid(entry_id)
            assert not issued
            assert why.startswith("INTERNAL: unable to look up agent information"), why
        finally:
            agent.close()
    finally:
        second.stop()


def _entries_through_cli(
    server: ServerDaemon, directory: Path, verb: str, entries: list[dict[str, object]]
) -> list[str]:
    """``entry <verb> -data`` with ``entries`` in one call (SPIRE's JSON); the IDs of the entries, in order."""
    data = directory / f"{verb}-{uuid.uuid4()}.json"
    data.write_text(json.dumps({"entries": entries}))
    results = json.loads(server.cli("entry", verb, "-data", str(data), "-output", "json").stdout)["results"]
    assert all(result["status"]["code"] == 0 for result in results), results
    return [str(result["entry"]["id"]) for result in results]


@pytest.mark.slow
def test_a_server_cut_off_while_another_writes_misses_none_of_its_changes(
    cut_off_pair: tuple[ServerDaemon, TcpRelay, Path, str],
) -> None:
    """Reliability case 24, the events-based cache under many writes: server B is cut off from
    PostgreSQL while server A creates 150 entries for B's agent, updates 20 and deletes 30 made
    before the cut. Once B reaches the database again, what it serves the agent is exactly what
    the database holds: no change missed, none applied twice, nothing deleted left behind."""
    first, relay, directory, relayed_dsn = cut_off_pair
    second = start_server(directory / "second", datastore=("postgres", relayed_dsn))
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        agent = _Agent(second, first.join_token(alias))

        def spec(path: str, entry_id: str | None = None) -> dict[str, object]:
            entry: dict[str, object] = {
                "spiffe_id": f"spiffe://example.org/{path}",
                "parent_id": alias,
                "selectors": [{"type": "unix", "value": "uid:1"}],
            }
            return entry if entry_id is None else {**entry, "entry_id": entry_id}

        before = _entries_through_cli(first, directory, "create", [spec(f"before/{i}") for i in range(60)])
        expected = {entry_id: f"spiffe://example.org/before/{i}" for i, entry_id in enumerate(before)}

        def seen_by_agent() -> dict[str, str]:
            return {entry_id: spiffe_id for entry_id, spiffe_id in agent.entry_ids().items() if spiffe_id != alias}

        assert eventually(lambda: seen_by_agent() == expected, timeout=30)

        relay.cut()
        during = _entries_through_cli(first, directory, "create", [spec(f"during/{i}") for i in range(150)])
        expected.update({entry_id: f"spiffe://example.org/during/{i}" for i, entry_id in enumerate(during)})
        with pytest.raises(GRPCError) as unreachable:  # the cut is real: B cannot even look its agent up
            agent.entry_ids()
        assert "database unavailable" in unreachable.value.message, unreachable.value
        updated = before[30:50]
        _entries_through_cli(first, directory, "update", [spec(f"updated/{i}", e) for i, e in enumerate(updated)])
        expected.update({entry_id: f"spiffe://example.org/updated/{i}" for i, entry_id in enumerate(updated)})
        deleted = directory / "deleted.json"
        deleted.write_text(json.dumps({"ids": before[:30]}))
        first.cli("entry", "delete", "-file", str(deleted))
        for entry_id in before[:30]:
            del expected[entry_id]
        assert len(expected) == 180
        relay.restore()

        assert eventually(lambda: seen_by_agent() == expected, timeout=60)
        assert second.process is not None
        assert second.process.poll() is None
        assert "Traceback" not in second.log()
    finally:
        if agent is not None:
            agent.close()
        second.stop()
