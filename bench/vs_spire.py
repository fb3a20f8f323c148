"""pyspire beside SPIRE on the same machine in one run: the ratios operators compare (issue 21).

Both servers run side by side from equivalent configs (the same HCL file shape, SQLite in
their own data directories or, with ``--datastore postgres``, a fresh PostgreSQL database each
on the local server, rate limits off on both), the pinned SPIRE built by
tests/support/peers.py. Each measure is taken in alternating rounds, SPIRE then pyspire, and
each round gives one ratio (this machine's speed drifts by tens of percent within a minute; the
two sides of a round see nearly the same machine); the table gives the median of the rounds'
figures and of their ratios.

The server measures drive both servers through SPIRE's own APIs: join tokens and entries
through the admin socket, agents attested and syncing through the agent protocol (pyspire's
agent client, which speaks SPIRE's), X509-SVIDs through BatchNewX509SVID, JWT-SVIDs through
MintJWTSVID. Cold start restarts each server in turn on the data of the run and times process
start to an agent of the fleet receiving its entries. The agent measures start spire-agent and
pyspire-agent on their own server and time the Workload API as a workload sees it (one client,
then ``--clients`` client processes), and how long an agent takes from ``--agent-entries``
entries being created to holding an SVID for each (and its RSS then).

Large fleets (``--agents 10000``) time the syncs of ``--sample-agents`` agents of the fleet per
round: the whole fleet is attested and its entries are in each server's cache, but two cores
cannot carry ten thousand agents syncing every 5 s on either server, so the rest stay idle.
``--server-only`` leaves out the agent measures, which do not depend on the fleet.

Run: python bench/vs_spire.py [--agents 100] [--entries-per-agent 10] [--rounds 5] [--datastore postgres]
     [--sample-agents N] [--server-only] [--clients 100] [--agent-entries 10000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from grpclib.client import Channel  # noqa: E402
from grpclib.exceptions import GRPCError, StreamTerminatedError  # noqa: E402
from pyspire.agent.client import ServerClient, ServerUnavailable  # noqa: E402
from pyspire.crypto import LocalSigner, build_csr  # noqa: E402
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2  # noqa: E402
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2  # noqa: E402
from pyspire.proto.spire.api.types import types_pb2  # noqa: E402

from bench.agent_bench import PACED_INTERVAL, concurrent_first_messages, first_messages  # noqa: E402
from bench.results import update_section  # noqa: E402
from bench.server_bench import (  # noqa: E402
    TD,
    attest_all,
    create_entries,
    create_tokens,
    issuance_rate,
    percentile,
    rss_mib,
    time_calls,
)
from tests.support import peers  # noqa: E402
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server  # noqa: E402
from tests.support.databases import postgres_database  # noqa: E402
from tests.support.workloads import fetched_spiffe_id, register_this_process  # noqa: E402

RATE_LIMITS_OFF = "ratelimit {\n attestation = false\n signing = false\n }"
SIDES = ("spire", "pyspire")
STORES = {"sqlite3": "SQLite", "postgres": "PostgreSQL"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    """One implementation's server, its attested agents' clients, and its agent."""

    name: str
    server: ServerDaemon
    clients: list[ServerClient]
    agent: AgentDaemon | None = None
    probe: tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey] | None = None
    """The SVID and key of one more agent of the fleet, which cold start times (its connection is made anew)."""


@dataclass(frozen=True)
class Row:
    measure: str
    spire: float
    pyspire: float
    ratio: float
    target: str
    unit: str
    pyspire_under: float | None = None
    """A bound on pyspire's own figure besides the ratio (agent start: under 1 s)."""

    def met(self) -> str:
        bound, value = self.target.split(" ")
        ratio_met = self.ratio <= float(value) if bound == "<=" else self.ratio >= float(value)
        absolute_met = self.pyspire_under is None or self.pyspire < self.pyspire_under
        return "met" if ratio_met and absolute_met else "MISSED"


async def _mint_jwt_rate(server: ServerDaemon, seconds: float, in_flight: int = 8) -> float:
    channel = Channel(path=str(server.socket_path))
    stub = svid_grpc.SVIDStub(channel)
    request = svid_pb2.MintJWTSVIDRequest(
        id=types_pb2.SPIFFEID(trust_domain=TD.name, path="/bench/jwt"), audience=["bench"], ttl=300
    )
    minted = 0
    started = time.perf_counter()

    async def loop() -> None:
        nonlocal minted
        while time.perf_counter() - started < seconds:
            await stub.MintJWTSVID(request, timeout=30)
            minted += 1

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    channel.close()
    return minted / (time.perf_counter() - started)


async def _sync_cost(side: Side, rounds: int, sample: int) -> tuple[float, float]:
    """(server CPU ms per unchanged sync, sync p99 ms as the agents see it), from the first ``sample`` agents."""
    assert side.server.process is not None
    pid = side.server.process.pid
    before = _cpu_seconds(pid)
    try:
        _, sync_ms, _ = await time_calls(side.clients[:sample], rounds)
    except (GRPCError, StreamTerminatedError) as err:
        raise RuntimeError(f"{side.name}: a timed sync or GetAuthorizedEntries failed: {err}") from err
    spent = _cpu_seconds(pid) - before
    # time_calls makes a GetAuthorizedEntries call beside each sync: half the CPU is the sync's.
    return spent / 2 / len(sync_ms) * 1000, percentile(sync_ms, 99)


async def _attest_probe(side: Side, roots: list[x509.Certificate]) -> str:
    """Attest one more agent and keep its SVID and key for cold start; its join token."""
    (token,) = await create_tokens(side.server, 1)
    key = ec.generate_private_key(ec.SECP256R1())
    client = ServerClient([("127.0.0.1", side.server.port)], TD)
    client.set_roots(roots)

    async def no_challenge(_challenge: bytes) -> bytes:
        raise AssertionError("join_token asks no challenge")

    chain, _ = await client.attest("join_token", token.encode(), build_csr(LocalSigner(key)), no_challenge)
    client.close()
    side.probe = (list(chain), key)
    return token


async def _entries_seen(side: Side, roots: list[x509.Certificate]) -> int:
    """How many entries the probe agent receives from a fresh connection (0 while the server cannot answer)."""
    assert side.probe is not None
    client = ServerClient([("127.0.0.1", side.server.port)], TD)
    client.set_roots(roots)
    client.set_identity(*side.probe)
    try:
        return len(await client.sync_entries({}))
    except (ServerUnavailable, GRPCError, StreamTerminatedError, OSError):
        return 0
    finally:
        client.close()


async def _cold_start_seconds(side: Side, roots: list[x509.Certificate], expected: int) -> float:
    """Stop the server, start it again, and time process start to the probe agent receiving its entries."""
    side.server.stop()
    started = time.monotonic()
    side.server.start(wait=False)
    while await _entries_seen(side, roots) < expected:
        if time.monotonic() - started > 600:
            raise RuntimeError(f"{side.name}: the probe agent had not its {expected} entries 600 s after start")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _wait_until_served(clients: list[ServerClient], expected: int) -> None:
    """Every client receives its ``expected`` entries: a server's cache has caught up with the entries created.

    SPIRE builds its authorized-entries cache from the datastore's events after the entries are
    created; a measure taken before then would time the catching up, not the sync.
    """
    deadline = time.monotonic() + 600
    for client in clients:
        while True:
            try:
                if len(await client.sync_entries({})) >= expected:
                    break
            except (ServerUnavailable, GRPCError, StreamTerminatedError) as err:
                print(f"waiting for the server's cache: {err}", flush=True)
            if time.monotonic() > deadline:
                raise RuntimeError(f"clients did not receive their {expected} entries within 600 s")
            await asyncio.sleep(0.5)


def _agent_start_seconds(agent: AgentDaemon) -> float:
    """Process start to the Workload API's first X.509 answer, restarting an attested agent (warm disk)."""
    agent.stop()
    started = time.monotonic()
    agent.start(wait=False)
    fetched_spiffe_id(agent, timeout=60)
    return time.monotonic() - started


def _median_ratio(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    spire = statistics.median(p[0] for p in pairs)
    pyspire = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    return spire, pyspire, ratio


async def _measured_once_more_on_failure(measure: Callable[[Side], Awaitable[float]], side: Side) -> float:
    """One window; a window cut short by a dropped connection (seen once against each side) is taken again."""
    try:
        return await measure(side)
    except (ServerUnavailable, OSError) as err:
        print(f"{side.name}: window failed ({err}); taking it again", flush=True)
        return await measure(side)


async def _sync_cost_once_more_on_failure(side: Side, sample: int) -> tuple[float, float]:
    """:func:`_sync_cost` of 3 rounds, taken again once if a connection dropped (seen once: 1,000 x 100, PostgreSQL)."""
    try:
        return await _sync_cost(side, 3, sample)
    except (ServerUnavailable, OSError) as err:
        print(f"{side.name}: sync window failed ({err}); taking it again", flush=True)
        return await _sync_cost(side, 3, sample)


async def _rounds(
    rounds: int, measure: Callable[[Side], Awaitable[float]], sides: dict[str, Side]
) -> list[tuple[float, float]]:
    pairs = []
    for _ in range(rounds):
        found = {}
        for name in SIDES:
            found[name] = await _measured_once_more_on_failure(measure, sides[name])
        pairs.append((found["spire"], found["pyspire"]))
    return pairs


async def _server_rows(args: argparse.Namespace, sides: dict[str, Side]) -> list[Row]:
    """The server's measures, in one event loop (the agents' connections belong to it)."""
    roots = {}
    for side in sides.values():
        roots[side.name] = x509.load_pem_x509_certificates(side.server.bundle_pem().encode())
        started = time.monotonic()
        tokens = await create_tokens(side.server, args.agents)
        side.clients = await attest_all(side.server, tokens, roots[side.name])
        probe_token = await _attest_probe(side, roots[side.name])
        await create_entries(side.server, [*tokens, probe_token], args.entries_per_agent)
        await _wait_until_served(side.clients[: args.sample_agents], args.entries_per_agent)
        print(
            f"{side.name}: {args.agents + 1:,} agents attested, {(args.agents + 1) * args.entries_per_agent:,}"
            f" entries, served in {time.monotonic() - started:.0f} s",
            flush=True,
        )
    fleet = f"{args.agents:,} agents x {args.entries_per_agent} entries"
    cpu_pairs, p99_pairs = [], []
    for _ in range(args.rounds):
        found = {name: await _sync_cost_once_more_on_failure(sides[name], args.sample_agents) for name in SIDES}
        cpu_pairs.append((found["spire"][0], found["pyspire"][0]))
        p99_pairs.append((found["spire"][1], found["pyspire"][1]))
    rows = [
        Row(f"server CPU per unchanged sync, {fleet}", *_median_ratio(cpu_pairs), "<= 1.0", "ms"),
        Row(f"sync latency p99 as agents see it, {fleet}", *_median_ratio(p99_pairs), "<= 2.0", "ms"),
    ]

    async def issuance(side: Side) -> float:
        return await issuance_rate(side.clients[:8], args.window)

    async def minting(side: Side) -> float:
        return await _mint_jwt_rate(side.server, args.window)

    issued = await _rounds(args.rounds, issuance, sides)
    rows.append(Row("X509-SVID issuance through BatchNewX509SVID, saturated", *_median_ratio(issued), ">= 0.5", "/s"))
    minted = await _rounds(args.rounds, minting, sides)
    rows.append(Row("JWT-SVID minting rate (MintJWTSVID)", *_median_ratio(minted), ">= 0.5", "/s"))
    rss = {name: rss_mib(_pid(sides[name].server)) for name in SIDES}
    ratio = rss["pyspire"] / rss["spire"]
    rows.append(Row(f"server RSS with {fleet}", rss["spire"], rss["pyspire"], ratio, "<= 2.0", "MiB"))
    for side in sides.values():
        for client in side.clients:
            client.close()

    async def cold_start(side: Side) -> float:
        return await _cold_start_seconds(side, roots[side.name], args.entries_per_agent)

    starts = await _rounds(max(3, args.rounds // 2), cold_start, sides)
    cold = f"cold start to serving (an agent receives its entries), {fleet}"
    rows.append(Row(cold, *_median_ratio(starts), "<= 1.0", "s"))
    return rows


def _pid(daemon: ServerDaemon | AgentDaemon) -> int:
    assert daemon.process is not None
    return daemon.process.pid


def _agent_rows(
    args: argparse.Namespace, sides: dict[str, Side], scratch: Path, agents: dict[str, Path | None]
) -> list[Row]:
    alias = "spiffe://example.org/node/bench"
    workload = "spiffe://example.org/bench/workload"
    for name, side in sides.items():
        side.agent = start_agent(
            scratch / name / "agent",
            side.server,
            side.server.join_token(alias),
            executable=agents[name],
            log_level="WARN",
        )
        register_this_process(side.server, alias, workload)
        assert fetched_spiffe_id(side.agent, timeout=60) == workload

    async def first_p99(side: Side) -> float:
        assert side.agent is not None
        return percentile(await first_messages(str(side.agent.socket_path), 200), 99)

    async def many_p99(side: Side) -> float:
        assert side.agent is not None
        path = str(side.agent.socket_path)
        latencies = await asyncio.to_thread(concurrent_first_messages, path, args.clients, 10, PACED_INTERVAL)
        return percentile(latencies, 99)

    first = asyncio.run(_rounds(args.rounds, first_p99, sides))
    many = asyncio.run(_rounds(max(3, args.rounds // 2), many_p99, sides))
    starts = []
    for _ in range(args.rounds):
        found = {name: _agent_start_seconds(sides[name].agent) for name in SIDES}  # type: ignore[arg-type]
        starts.append((found["spire"], found["pyspire"]))
    cached, rss = [], []
    for number in range(args.agent_entry_rounds):
        measured = {
            name: _many_entries_cached(sides[name], scratch / name / f"many-{number}", agents[name], args.agent_entries)
            for name in SIDES
        }
        cached.append((measured["spire"][0], measured["pyspire"][0]))
        rss.append((measured["spire"][1], measured["pyspire"][1]))
    return [
        Row("Workload API first X509SVIDResponse p99, 1 client", *_median_ratio(first), "<= 2.0", "ms"),
        Row(
            f"Workload API first X509SVIDResponse p99, {args.clients} client processes"
            f" (each watching, a new stream every {PACED_INTERVAL:g} s)",
            *_median_ratio(many),
            "<= 2.0",
            "ms",
        ),
        Row(
            f"agent: {args.agent_entries:,} entries created to every SVID cached",
            *_median_ratio(cached),
            "<= 1.0",
            "s",
        ),
        Row(f"agent RSS with those {args.agent_entries:,} SVIDs", *_median_ratio(rss), "<= 2.0", "MiB"),
        Row(
            "agent start (process start to Workload API serving, warm disk; pyspire under 1 s)",
            *_median_ratio(starts),
            "<= 2.0",
            "s",
            pyspire_under=1.0,
        ),
    ]


def _many_entries_cached(side: Side, directory: Path, executable: Path | None, count: int) -> tuple[float, float]:
    """(seconds from ``count`` entries being created to the agent holding an SVID for each, agent RSS MiB then).

    A fresh agent of its own, with a cache large enough for every SVID (SPIRE's default keeps
    1,000 unless a workload asks); both agents log "Creating X509-SVID" once per SVID they mint.
    """
    alias = f"spiffe://example.org/node/{directory.name}"
    agent = start_agent(
        directory,
        side.server,
        side.server.join_token(alias),
        executable=executable,
        extra=f"x509_svid_cache_max_size = {count + 10}",
        log_level="INFO",
    )
    try:
        log_start = len(agent.log())
        started = time.monotonic()
        asyncio.run(_create_agent_entries(side.server, alias, count, directory.name))
        while agent.log()[log_start:].count('msg="Creating X509-SVID"') < count:
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{side.name}: the agent did not mint {count} SVIDs within 10 minutes")
            time.sleep(0.2)
        return time.monotonic() - started, rss_mib(_pid(agent))
    finally:
        agent.stop()


async def _create_agent_entries(server: ServerDaemon, parent: str, count: int, tag: str) -> None:
    channel = Channel(path=str(server.socket_path))
    stub = entry_grpc.EntryStub(channel)
    entries = [
        types_pb2.Entry(
            parent_id=types_pb2.SPIFFEID(trust_domain=TD.name, path=parent.removeprefix(f"spiffe://{TD.name}")),
            spiffe_id=types_pb2.SPIFFEID(trust_domain=TD.name, path=f"/{tag}/{i}"),
            selectors=[types_pb2.Selector(type="unix", value=f"uid:{100_000 + i}")],
        )
        for i in range(count)
    ]
    for offset in range(0, count, 500):
        reply = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=entries[offset : offset + 500]))
        failed = [r.status.message for r in reply.results if r.status.code != 0]
        if failed:
            raise RuntimeError(f"entry creation failed: {failed[:3]}")
    channel.close()


def _title(args: argparse.Namespace) -> str:
    """The RESULTS.md section of this run's shape: the default fleet on SQLite has the plain title."""
    options = []
    if args.datastore != "sqlite3":
        options.append(f"--datastore {args.datastore}")
    if (args.agents, args.entries_per_agent) != (100, 10):
        options.append(f"--agents {args.agents} --entries-per-agent {args.entries_per_agent}")
    if args.server_only:
        options.append("--server-only")
    if not options:
        return "pyspire beside SPIRE (bench/vs_spire.py)"
    shape = f"{args.agents:,} agents x {args.entries_per_agent:,} entries, {STORES[args.datastore]}"
    return f"pyspire beside SPIRE, {shape} (bench/vs_spire.py {' '.join(options)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=100, help="attested agents per server")
    parser.add_argument("--entries-per-agent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=4.0, help="seconds of each rate window")
    parser.add_argument(
        "--datastore",
        choices=("sqlite3", "postgres"),
        default="sqlite3",
        help="both servers' datastore: SQLite files, or a fresh PostgreSQL database each (on 127.0.0.1:5432)",
    )
    parser.add_argument(
        "--sample-agents", type=int, default=None, help="agents of the fleet whose syncs are timed (default: all)"
    )
    parser.add_argument("--server-only", action="store_true", help="leave out the agent measures")
    parser.add_argument("--clients", type=int, default=100, help="Workload API client processes")
    parser.add_argument("--agent-entries", type=int, default=10_000, help="entries of the agent-cache measure")
    parser.add_argument("--agent-entry-rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    args.sample_agents = args.sample_agents or args.agents
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    built = peers.spire()
    servers = {"spire": built.path("spire-server"), "pyspire": None}
    agents = {"spire": built.path("spire-agent"), "pyspire": None}
    scratch = Path(tempfile.mkdtemp(prefix="pyspire-vs-spire-"))
    sides: dict[str, Side] = {}
    databases = contextlib.ExitStack()
    try:
        for name in SIDES:
            directory = scratch / name / "server"
            datastore = None
            if args.datastore == "postgres":
                # lib/pq (SPIRE's driver) asks for TLS unless told otherwise; the local server has none.
                datastore = ("postgres", databases.enter_context(postgres_database()) + " sslmode=disable")
            server = start_server(
                directory, executable=servers[name], extra=RATE_LIMITS_OFF, log_level="WARN", datastore=datastore
            )
            sides[name] = Side(name, server, [])
        rows = asyncio.run(_server_rows(args, sides))
        if not args.server_only:
            rows += _agent_rows(args, sides, scratch, agents)
    finally:
        for side in sides.values():
            if side.agent is not None:
                side.agent.stop()
            side.server.stop()
        databases.close()

    table = ["| measure | SPIRE | pyspire | ratio (pyspire / SPIRE) | target | |", "|---|---|---|---|---|---|"]
    for row in rows:
        figures = f"{row.spire:,.2f} {row.unit} | {row.pyspire:,.2f} {row.unit}"
        table.append(f"| {row.measure} | {figures} | {row.ratio:.2f} | {row.target} | {row.met()} |")
    sampled = ""
    if args.sample_agents < args.agents:
        sampled = f"syncs timed on {args.sample_agents:,} of the {args.agents:,} agents, "
    machine = (
        f"SPIRE {peers.SPIRE_VERSION} (built from the Go module proxy) and pyspire on the same machine, "
        f"{STORES[args.datastore]}, "
        f"{args.rounds} alternating rounds (medians of the rounds' figures and ratios), "
        f"{sampled}{args.window:g} s rate windows; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; {datetime.now(UTC):%Y-%m-%d}"
    )
    print("\n".join(table))
    print(machine)
    if args.write:
        update_section(_title(args), "\n".join([*table, "", machine]))


if __name__ == "__main__":
    main()
