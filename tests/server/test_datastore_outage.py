"""The database goes away under a running server and agent, then comes back (reliability case 24).

PostgreSQL is reached through a TCP relay the test cuts. Meanwhile agent calls fail closed,
an attestation leaves neither a node nor a spent token, an admin's write is refused (never
acknowledged and lost), and workloads keep their cached SVIDs. Afterwards everything converges:
the same token attests once, entries made then reach the workload, nothing made before is lost.

The database can also stay reachable but refuse writes (a read-only replica after a failover,
here its sessions made read-only): what needs a write fails closed, what only reads works as in
SPIRE (agents sync and mint, a ban is still seen), and the server says it is unhealthy.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerUnavailable
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.agent.test_end_to_end import _entry
from tests.server.test_api_security import attest
from tests.server.test_health import _read_only
from tests.support.daemons import start_agent, start_server
from tests.support.databases import POSTGRES, postgres_database
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()


@pytest.mark.slow
def test_a_datastore_outage_fails_closed_and_converges_afterwards(tmp_path: Path) -> None:
    with postgres_database() as dsn:
        relay = TcpRelay(("127.0.0.1", 5432)).restore()
        server = start_server(
            tmp_path / "server",
            datastore=("postgres", dsn.replace("port=5432", f"port={relay.port}")),
            extra="ratelimit {\n attestation = false\n }",
        )
        agent = None
        runner = asyncio.Runner()
        try:
            alias = "spiffe://example.org/node/outage"
            agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
            before = _entry(server, alias, "spiffe://example.org/before-the-outage", f"unix:uid:{UID}")
            cached = eventually(lambda: x509_context(agent).svids, timeout=30)
            spare_token = server.join_token()
            caller, _ = runner.run(attest(server, server.join_token(alias)))
            banned, banned_chain = runner.run(attest(server, server.join_token(alias)))
            server.cli("agent", "ban", "-spiffeID", str(leaf_spiffe_id(banned_chain[0])))

            relay.cut()

            # Workloads keep their cached SVIDs.
            assert x509_context(agent).svids[0].leaf == cached[0].leaf
            # An agent's call cannot confirm its standing: refused, not served from the cache.
            csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
            with pytest.raises(GRPCError) as refused:
                runner.run(caller.new_x509_svids([(before, csr)]))
            assert refused.value.status.name == "INTERNAL"
            # Nor can it renew; and an agent banned before the outage gets nothing either (the
            # server cannot read its record, so it cannot tell it is banned: it must refuse).
            with pytest.raises(GRPCError) as renewal:
                runner.run(caller.renew(build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))))
            assert renewal.value.status.name in ("INTERNAL", "UNAVAILABLE"), renewal.value
            caller.close()
            for attempt in (
                lambda: banned.new_x509_svids([(before, csr)]),
                lambda: banned.renew(build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))),
                lambda: banned.sync_entries({}),
            ):
                with pytest.raises(GRPCError) as stale:
                    runner.run(attempt())
                assert stale.value.status.name in ("INTERNAL", "UNAVAILABLE", "PERMISSION_DENIED"), stale.value
            # An attestation completes nothing: no node, and the token is not spent.
            with pytest.raises((GRPCError, ServerUnavailable)):
                runner.run(attest(server, spare_token))
            # An admin's write is refused, not acknowledged and lost.
            during = server.cli(
                "entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/during", "-selector", "unix:uid:1",
                check=False,
            )  # fmt: skip
            assert during.returncode != 0
            assert "Traceback" not in during.stderr

            relay.restore()

            # The token attests now, once; entries made now reach the workload; nothing was lost.
            eventually(lambda: runner.run(attest(server, spare_token)), timeout=30)
            agents = server.cli("agent", "list").stdout
            assert agents.count(f"spiffe://example.org/spire/agent/join_token/{spare_token}") == 1
            _entry(server, alias, "spiffe://example.org/after-the-outage", f"unix:uid:{UID}")

            def both() -> list[str] | None:
                found = sorted(str(s.spiffe_id) for s in x509_context(agent).svids)
                return found if len(found) == 2 else None

            ids = eventually(both, timeout=30)
            assert ids == ["spiffe://example.org/after-the-outage", "spiffe://example.org/before-the-outage"]
            entries = server.cli("entry", "show").stdout
            assert "spiffe://example.org/during" not in entries
            # The ban outlived the outage.
            with pytest.raises(GRPCError) as still_banned:
                runner.run(banned.sync_entries({}))
            assert still_banned.value.status.name == "PERMISSION_DENIED"
            banned.close()
            assert agent.process is not None
            assert agent.process.poll() is None
            assert "Traceback" not in server.log()
        finally:
            runner.close()
            if agent is not None:
                agent.stop()
            server.stop()
            relay.cut()


def _fresh_session_is_read_only(dsn: str) -> bool:
    """Whether a new session on ``dsn``'s database (as the server's pool opens them) is read-only."""
    psycopg = pytest.importorskip("psycopg")
    name = dsn.rsplit("dbname=", 1)[1]
    with psycopg.connect(**{**POSTGRES, "dbname": name}, autocommit=True) as session:
        row = session.execute("SHOW transaction_read_only").fetchone()
    assert row is not None
    return bool(row[0] == "on")


def _new_csr() -> bytes:
    return build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))


@pytest.mark.slow
def test_a_read_only_datastore_refuses_writes_keeps_reads_and_converges_afterwards(tmp_path: Path) -> None:
    with postgres_database() as dsn:
        server = start_server(
            tmp_path / "server", datastore=("postgres", dsn), extra="ratelimit {\n attestation = false\n }"
        )
        agent = None
        runner = asyncio.Runner()
        try:
            alias = "spiffe://example.org/node/read-only"
            agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
            before = _entry(server, alias, "spiffe://example.org/before-read-only", f"unix:uid:{UID}")
            cached = eventually(lambda: x509_context(agent).svids, timeout=30)
            spare_token = server.join_token()
            caller, caller_chain = runner.run(attest(server, server.join_token(alias)))
            banned, banned_chain = runner.run(attest(server, server.join_token(alias)))
            server.cli("agent", "ban", "-spiffeID", str(leaf_spiffe_id(banned_chain[0])))
            assert "Server is healthy." in server.cli("healthcheck").stdout

            # Every session the server opens from now on is read-only (its open ones are ended).
            _read_only(dsn, read_only=True)
            assert _fresh_session_is_read_only(dsn)

            # Before anyone is refused a write, healthcheck already says so (it tries a no-op write).
            unhealthy = server.cli("healthcheck", check=False)
            assert (unhealthy.returncode, unhealthy.stderr) == (1, "Server is unhealthy: status NOT_SERVING\n")
            assert "cannot execute DELETE in a read-only transaction" in server.log()  # the server's own sessions

            # Reads keep working, as in SPIRE: an agent syncs its entries and mints SVIDs (no write)...
            assert before in {entry.id for entry in runner.run(caller.sync_entries({}))}
            [(_, minted, message)] = runner.run(caller.new_x509_svids([(before, _new_csr())]))
            assert minted is not None, message
            assert str(leaf_spiffe_id(minted[0])) == "spiffe://example.org/before-read-only"
            # ... the workload keeps its SVID from the agent, and the admin can list.
            assert x509_context(agent).svids[0].leaf == cached[0].leaf
            assert "spiffe://example.org/before-read-only" in server.cli("entry", "show").stdout
            # A renewal needs a write: refused, not acknowledged.
            with pytest.raises(GRPCError) as renewal:
                runner.run(caller.renew(_new_csr()))
            assert renewal.value.status.name == "INTERNAL", renewal.value
            assert "read-only transaction" in (renewal.value.message or "")
            # The ban made before is still read: the banned agent can neither sync, mint nor renew.
            for attempt in (
                lambda: banned.sync_entries({}),
                lambda: banned.new_x509_svids([(before, _new_csr())]),
                lambda: banned.renew(_new_csr()),
            ):
                with pytest.raises(GRPCError) as stale:
                    runner.run(attempt())
                assert stale.value.status.name == "PERMISSION_DENIED", stale.value
                assert "is banned" in (stale.value.message or "")
            # An attestation completes nothing: no node, and the token is not spent.
            spare_id = f"spiffe://example.org/spire/agent/join_token/{spare_token}"
            with pytest.raises(GRPCError) as attestation:
                runner.run(attest(server, spare_token))
            assert attestation.value.status.name == "INTERNAL", attestation.value
            assert spare_id not in server.cli("agent", "list").stdout
            # An admin's write is refused with a message, not acknowledged and lost.
            during_id = "spiffe://example.org/during-read-only"
            create_during = (
                "entry",
                "create",
                "-parentID",
                alias,
                "-spiffeID",
                during_id,
                "-selector",
                f"unix:uid:{UID}",
            )
            during = server.cli(*create_during, check=False)
            assert during.returncode == 1
            assert during.stdout == ""
            assert during.stderr.startswith("Error: rpc error: code = Internal desc = "), during.stderr
            assert "cannot execute INSERT in a read-only transaction" in during.stderr
            assert during_id not in server.cli("entry", "show").stdout
            # Still unhealthy; the server stays up and logs each refusal in a line, no traceback.
            assert server.cli("healthcheck", check=False).returncode == 1
            assert server.process is not None
            assert server.process.poll() is None
            log = server.log()
            assert "Traceback" not in log
            assert 0 < log.count("read-only transaction") < 30

            _read_only(dsn, read_only=False)
            assert not _fresh_session_is_read_only(dsn)

            # Writable again: healthy, and every write refused before now succeeds.
            eventually(lambda: "Server is healthy." in server.cli("healthcheck", check=False).stdout, timeout=15)
            runner.run(attest(server, spare_token))
            assert server.cli("agent", "list").stdout.count(spare_id) == 1
            renewed = runner.run(caller.renew(_new_csr()))
            assert leaf_spiffe_id(renewed[0]) == leaf_spiffe_id(caller_chain[0])
            assert renewed[0].serial_number != caller_chain[0].serial_number
            caller.close()
            server.cli(*create_during)

            def both() -> list[str] | None:
                found = sorted(str(s.spiffe_id) for s in x509_context(agent).svids)
                return found if len(found) == 2 else None

            assert eventually(both, timeout=30) == [
                "spiffe://example.org/before-read-only",
                "spiffe://example.org/during-read-only",
            ]
            # Nothing acknowledged before was lost, the ban included.
            assert server.cli("entry", "show").stdout.count(before) == 1
            with pytest.raises(GRPCError) as still_banned:
                runner.run(banned.sync_entries({}))
            assert still_banned.value.status.name == "PERMISSION_DENIED"
            banned.close()
            assert agent.process is not None
            assert agent.process.poll() is None
            assert "Traceback" not in server.log()
        finally:
            runner.close()
            if agent is not None:
                agent.stop()
            server.stop()
