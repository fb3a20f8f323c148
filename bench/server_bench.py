"""The server at scale: issue 3's targets, measured on a real server process.

One run, on SQLite in a scratch directory:
1. attests AGENTS agents with join tokens (real TLS, real attestation);
2. creates ENTRIES registration entries (ENTRIES / AGENTS per agent) through the Entry API in
   batches of 500 over the admin socket (target: 100,000 in < 60 s);
3. times GetAuthorizedEntries and unchanged SyncAuthorizedEntries from agents over mTLS
   (targets: GetAuthorizedEntries p99 < 20 ms; unchanged sync < 2 ms and zero datastore
   queries, read from the server's Prometheus counter);
4. reads the server's RSS (target < 1 GiB);
5. X509-SVID issuance through BatchNewX509SVID (batches of 50 CSRs, mTLS) next to the bare
   build-and-sign rate of ``cryptography`` for the same certificate on one core, measured in
   turns so both see the same machine (target >= 35%, median of the per-turn ratios);
6. cold start: adds attested nodes straight into the datastore up to COLD_AGENTS, restarts the
   server and reads how long loading the authorized-entries index took (target < 5 s).

Run: python bench/server_bench.py [--entries 100000] [--agents 1000] [--write]
The signing rate limit is turned off for the run (it would cap issuance at 500/s per address).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pyspire.agent.cache import WorkloadEntry  # noqa: E402
from pyspire.agent.client import ServerClient  # noqa: E402
from pyspire.crypto import LocalSigner, build_csr  # noqa: E402
from pyspire.plugin.records import AttestedNode  # noqa: E402
from pyspire.plugin.testing import load_plugin, make_core_config  # noqa: E402
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2  # noqa: E402
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2  # noqa: E402
from pyspire.proto.spire.api.types import types_pb2  # noqa: E402
from pyspire.spiffe import SpiffeId, TrustDomain  # noqa: E402

from bench.results import update_section  # noqa: E402
from tests.support.daemons import ServerDaemon, start_server  # noqa: E402
from tests.support.free_port import free_port  # noqa: E402

TD = TrustDomain.parse("example.org")
BATCH = 500
CSR_BATCH = 50
ROUNDS = 5
IN_FLIGHT = 2
"""Agents asking for SVIDs at the same time in the issuance measurement."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SYNC_METRIC = "spire_server_rpc_entry_v1_entry_sync_authorized_entries"
"""SPIRE's name for the SyncAuthorizedEntries call counter."""


def _metrics(metrics_port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()


def datastore_calls(metrics_port: int) -> float:
    """DataStore calls so far, but the cache follower's polls (they run whether agents sync or not).

    The sum of every ``spire_server_datastore_<operation>`` call counter except the change-log
    reads (``change_event_last_sequence``, ``*_event_list``).
    """
    text = _metrics(metrics_port)
    pattern = r"^spire_server_datastore_(?!\w*elapsed_time)(?!change_event_)(?!\w*_event_list)\w+\{[^}]*\} (\S+)$"
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def handling_seconds(metrics_port: int, metric: str) -> tuple[float, float]:
    """The server's own time in the RPC counted as ``metric`` so far: (sum of seconds, number of calls).

    As SPIRE, each RPC's elapsed time is a summary in milliseconds, one series per status.
    """
    text = _metrics(metrics_port)
    found = {}
    for kind in ("sum", "count"):
        values = re.findall(rf"^{metric}_elapsed_time_{kind}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
        found[kind] = sum(float(value) for value in values)
    return found["sum"] / 1000.0, found["count"]


async def admin_channel(server: ServerDaemon):  # type: ignore[no-untyped-def]
    from grpclib.client import Channel  # noqa: PLC0415

    return Channel(path=str(server.socket_path))


async def create_tokens(server: ServerDaemon, count: int) -> list[str]:
    channel = await admin_channel(server)
    stub = agent_grpc.AgentStub(channel)
    tokens = []
    for _ in range(count):
        reply = await stub.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=3600, token=str(uuid.uuid4())))
        tokens.append(reply.value)
    channel.close()
    return tokens


async def attest_all(server: ServerDaemon, tokens: list[str], roots: list[x509.Certificate]) -> list[ServerClient]:
    semaphore = asyncio.Semaphore(16)

    async def one(token: str) -> ServerClient:
        async with semaphore:
            key = ec.generate_private_key(ec.SECP256R1())
            client = ServerClient([("127.0.0.1", server.port)], TD)
            client.set_roots(roots)

            async def no_challenge(_challenge: bytes) -> bytes:
                raise AssertionError

            chain, _ = await client.attest("join_token", token.encode(), build_csr(LocalSigner(key)), no_challenge)
            client.set_identity(chain, key)
            return client

    return await asyncio.gather(*(one(t) for t in tokens))


async def create_entries(server: ServerDaemon, tokens: list[str], per_agent: int) -> float:
    channel = await admin_channel(server)
    stub = entry_grpc.EntryStub(channel)
    entries = [
        types_pb2.Entry(
            parent_id=types_pb2.SPIFFEID(trust_domain=TD.name, path=f"/spire/agent/join_token/{token}"),
            spiffe_id=types_pb2.SPIFFEID(trust_domain=TD.name, path=f"/workload/{a}/{i}"),
            selectors=[types_pb2.Selector(type="unix", value=f"uid:{1000 + i}")],
        )
        for a, token in enumerate(tokens)
        for i in range(per_agent)
    ]
    started = time.perf_counter()
    for offset in range(0, len(entries), BATCH):
        reply = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=entries[offset : offset + BATCH]))
        failed = [r.status.message for r in reply.results if r.status.code != 0]
        if failed:
            raise RuntimeError(f"entry creation failed: {failed[:3]}")
    elapsed = time.perf_counter() - started
    channel.close()
    return elapsed


async def time_calls(clients: list[ServerClient], rounds: int) -> tuple[list[float], list[float], int]:
    """GetAuthorizedEntries and unchanged-sync latencies (ms), and the entries one agent sees."""
    known: list[dict[str, WorkloadEntry]] = []
    for client in clients:
        entries = await client.sync_entries({})
        known.append({e.id: e for e in entries})
    get_ms, sync_ms = [], []
    for _ in range(rounds):
        for client, seen in zip(clients, known, strict=True):
            stub = entry_grpc.EntryStub(client._current())
            started = time.perf_counter()
            await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest(), timeout=30)
            get_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await client.sync_entries(seen)
            sync_ms.append((time.perf_counter() - started) * 1000)
    return get_ms, sync_ms, len(known[0])


async def issuance_rate(clients: list[ServerClient], seconds: float) -> float:
    """SVIDs per second with one batch in flight per client (agents renew concurrently)."""
    batches = []
    for client in clients:
        entries = await client.sync_entries({})
        entry_ids = [e.id for e in entries][:CSR_BATCH]
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in entry_ids]
        batches.append([(entry_id, build_csr(LocalSigner(key))) for entry_id, key in zip(entry_ids, keys, strict=True)])
    issued = 0
    started = time.perf_counter()

    async def loop(client: ServerClient, batch: list[tuple[str, bytes]]) -> None:
        nonlocal issued
        while time.perf_counter() - started < seconds:
            results = await client.new_x509_svids(batch)
            issued += sum(1 for _, svid, _ in results if svid is not None)

    await asyncio.gather(*(loop(c, b) for c, b in zip(clients, batches, strict=True)))
    return issued / (time.perf_counter() - started)


async def issuance_against_bare(clients: list[ServerClient]) -> tuple[float, float, float]:
    """(issuance/s, bare/s, ratio), each the median of ROUNDS windows taken in turn.

    This machine's speed drifts by tens of percent within a minute (shared cores); a window
    of issuance and then a window of bare signing see nearly the same machine, so each ratio
    is taken within one round and the median ratio is reported.
    """
    issued, bare, ratios = [], [], []
    for _ in range(ROUNDS):
        issued.append(await issuance_rate(clients, 4.0))
        bare.append(bare_signing_rate(2.0))
        ratios.append(issued[-1] / bare[-1])
    return statistics.median(issued), statistics.median(bare), statistics.median(ratios)


def bare_signing_rate(seconds: float) -> float:
    """cryptography building and signing the same kind of X509-SVID, on this core."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US")])
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(leaf_key)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        now = datetime.now(UTC)
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US")]))
            .issuer_name(ca_name)
            .public_key(leaf_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=10))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH, x509.OID_CLIENT_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/workload/0/0")]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        count += 1
    return count / (time.perf_counter() - started)


def add_nodes_directly(directory: Path, total: int, existing: int) -> None:
    """Attested nodes written straight into the datastore (the cold-start fixture)."""
    store = load_plugin(
        "server",
        "DataStore",
        "sql",
        {"database_type": "sqlite3", "connection_string": str(directory / "data" / "datastore.sqlite3")},
        make_core_config(directory / "data"),
    )
    expiry = int(time.time()) + 3600
    for index in range(existing, total):
        store.create_attested_node(  # type: ignore[attr-defined]
            AttestedNode(
                spiffe_id=SpiffeId.from_segments(TD, "spire", "agent", "bench", str(index)),
                attestation_type="bench",
                cert_serial_number=str(index),
                cert_not_after=expiry,
            )
        )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--cold-agents", type=int, default=10_000)
    parser.add_argument("--sample-agents", type=int, default=100, help="agents timed for the latency figures")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    per_agent = args.entries // args.agents
    directory = Path(tempfile.mkdtemp(prefix="pyspire-bench-"))
    metrics_port = free_port()
    extra = "ratelimit {\n attestation = false\n signing = false\n }"
    server = start_server(directory, extra=extra, log_level="INFO")
    # Prometheus is configured outside the server block: restart with it.
    server.stop()
    server.config_text += f'\ntelemetry {{\n Prometheus {{\n host = "127.0.0.1"\n port = {metrics_port}\n }}\n}}\n'
    server.start()
    roots = x509.load_pem_x509_certificates(server.bundle_pem().encode())
    figures: dict[str, str] = {}

    async def scenario() -> tuple[float, list[float], list[float], int, float, tuple[float, float, float]]:
        tokens = await create_tokens(server, args.agents)
        started = time.perf_counter()
        clients = await attest_all(server, tokens, roots)
        attest_seconds = time.perf_counter() - started
        figures["attest"] = (
            f"{args.agents:,} agents attested in {attest_seconds:.1f} s ({args.agents / attest_seconds:.0f}/s)"
        )
        print(figures["attest"], flush=True)
        create_seconds = await create_entries(server, tokens, per_agent)
        print(f"{args.entries:,} entries created in {create_seconds:.1f} s", flush=True)
        sample = clients[: args.sample_agents]
        await time_calls(sample, 1)  # warm connections and caches
        before = datastore_calls(metrics_port)
        handled_before = handling_seconds(metrics_port, SYNC_METRIC)
        get_ms, sync_ms, seen = await time_calls(sample, 5)
        queries = datastore_calls(metrics_port) - before
        handled_after = handling_seconds(metrics_port, SYNC_METRIC)
        figures["sync_server_ms"] = str(
            (handled_after[0] - handled_before[0]) / max(1.0, handled_after[1] - handled_before[1]) * 1000
        )
        issued = await issuance_against_bare(clients[:IN_FLIGHT])
        for client in clients:
            client.close()
        await asyncio.sleep(0.1)
        return create_seconds, get_ms, sync_ms, seen, queries, issued

    try:
        create_seconds, get_ms, sync_ms, seen, queries, (issued_rate, bare, ratio) = asyncio.run(scenario())
        assert server.process is not None
        rss = rss_mib(server.process.pid)
        server.stop()

        add_nodes_directly(directory, args.cold_agents, args.agents)
        restart = time.perf_counter()
        server.start()
        ready = time.perf_counter() - restart
        match = re.findall(r'msg="Caches loaded".*?agents=(\d+) entries=(\d+) seconds=([\d.]+)', server.log())
        agents_loaded, entries_loaded, index_seconds = match[-1]  # logrus sorts the fields
    finally:
        server.stop()

    sync_p50, sync_p99 = statistics.median(sync_ms), percentile(sync_ms, 99)
    server_sync_ms = float(figures["sync_server_ms"])
    get_p50, get_p99 = statistics.median(get_ms), percentile(get_ms, 99)
    rows = [
        (
            "entries created through the API (batches of 500, SQLite)",
            f"{create_seconds:.1f} s",
            "< 60 s",
            create_seconds < 60,
        ),
        (
            f"GetAuthorizedEntries ({seen} entries per agent), p50 / p99",
            f"{get_p50:.2f} / {get_p99:.2f} ms",
            "p99 < 20 ms",
            get_p99 < 20,
        ),
        (
            "unchanged SyncAuthorizedEntries, server-side handling (mean)",
            f"{server_sync_ms:.2f} ms",
            "< 2 ms",
            server_sync_ms < 2,
        ),
        (
            "unchanged SyncAuthorizedEntries, round trip as the agent sees it, p50 / p99",
            f"{sync_p50:.2f} / {sync_p99:.2f} ms",
            "",
            None,
        ),
        ("datastore queries during those syncs", f"{queries:.0f}", "0", queries == 0),
        ("server RSS with that data", f"{rss:.0f} MiB", "< 1 GiB", rss < 1024),
        (
            f"X509-SVID issuance (BatchNewX509SVID x50, mTLS, {IN_FLIGHT} agents at once; median of {ROUNDS} windows)",
            f"{issued_rate:,.0f}/s",
            "",
            None,
        ),
        ("bare cryptography build+sign, one core, each window right after one of issuance", f"{bare:,.0f}/s", "", None),
        ("issuance / bare (median of the per-window ratios)", f"{ratio:.0%}", ">= 35%", ratio >= 0.35),
        (
            f"cold start: index of {int(entries_loaded):,} entries, {int(agents_loaded):,} agents",
            f"{float(index_seconds):.2f} s",
            "< 5 s",
            float(index_seconds) < 5,
        ),
        ("cold start: process start to admin socket ready", f"{ready:.2f} s", "", None),
    ]
    table = ["| measure | result | target | |", "|---|---|---|---|"]
    for name, value, target, met in rows:
        verdict = "" if met is None else ("met" if met else "**missed**")
        table.append(f"| {name} | {value} | {target} | {verdict} |")
        print(f"{name}: {value} {target} {verdict}")
    body = "\n".join(
        [
            f"{args.agents:,} agents attested with join tokens; {args.entries:,} entries ({per_agent} per agent);"
            f" latencies from {args.sample_agents} agents x 5 rounds, client-side, over mTLS on loopback.",
            "",
            *table,
            "",
            f"{figures['attest']}. {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()},"
            f" server and client on the same machine; {datetime.now(UTC):%Y-%m-%d}",
        ]
    )
    if args.write:
        update_section("Server at scale (bench/server_bench.py)", body)


if __name__ == "__main__":
    main()
