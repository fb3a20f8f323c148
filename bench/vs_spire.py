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
MintJWTSVID. The agent measures start spire-agent and pyspire-agent on their own server and time
the Workload API as a workload sees it.

Run: python bench/vs_spire.py [--agents 100] [--entries-per-agent 10] [--rounds 5] [--datastore postgres] [--write]
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
from grpclib.client import Channel  # noqa: E402
from pyspire.agent.client import ServerClient, ServerUnavailable  # noqa: E402
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2  # noqa: E402
from pyspire.proto.spire.api.types import types_pb2  # noqa: E402

from bench.agent_bench import first_messages  # noqa: E402
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


async def _sync_cost(side: Side, rounds: int) -> tuple[float, float]:
    """(server CPU ms per unchanged sync, sync p99 ms as the agents see it)."""
    assert side.server.process is not None
    pid = side.server.process.pid
    before = _cpu_seconds(pid)
    _, sync_ms, _ = await time_calls(side.clients, rounds)
    spent = _cpu_seconds(pid) - before
    # time_calls makes a GetAuthorizedEntries call beside each sync: half the CPU is the sync's.
    return spent / 2 / len(sync_ms) * 1000, percentile(sync_ms, 99)


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
    for side in sides.values():
        roots = x509.load_pem_x509_certificates(side.server.bundle_pem().encode())
        tokens = await create_tokens(side.server, args.agents)
        side.clients = await attest_all(side.server, tokens, roots)
        await create_entries(side.server, tokens, args.entries_per_agent)
        print(f"{side.name}: {args.agents} agents attested, {args.agents * args.entries_per_agent} entries", flush=True)
    fleet = f"{args.agents:,} agents x {args.entries_per_agent} entries"
    cpu_pairs, p99_pairs = [], []
    for _ in range(args.rounds):
        found = {name: await _sync_cost(sides[name], 3) for name in SIDES}
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

    first = asyncio.run(_rounds(args.rounds, first_p99, sides))
    starts = []
    for _ in range(args.rounds):
        found = {name: _agent_start_seconds(sides[name].agent) for name in SIDES}  # type: ignore[arg-type]
        starts.append((found["spire"], found["pyspire"]))
    return [
        Row("Workload API first X509SVIDResponse p99, 1 client", *_median_ratio(first), "<= 2.0", "ms"),
        Row(
            "agent start (process start to Workload API serving, warm disk; pyspire under 1 s)",
            *_median_ratio(starts),
            "<= 2.0",
            "s",
            pyspire_under=1.0,
        ),
    ]


def _title(args: argparse.Namespace) -> str:
    """The RESULTS.md section of this run's shape: the default fleet on SQLite has the plain title."""
    options = []
    if args.datastore != "sqlite3":
        options.append(f"--datastore {args.datastore}")
    if (args.agents, args.entries_per_agent) != (100, 10):
        options.append(f"--agents {args.agents} --entries-per-agent {args.entries_per_agent}")
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
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
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
    machine = (
        f"SPIRE {peers.SPIRE_VERSION} (built from the Go module proxy) and pyspire on the same machine, "
        f"{STORES[args.datastore]}, "
        f"{args.rounds} alternating rounds (medians of the rounds' figures and ratios), "
        f"{args.window:g} s rate windows; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; {datetime.now(UTC):%Y-%m-%d}"
    )
    print("\n".join(table))
    print(machine)
    if args.write:
        update_section(_title(args), "\n".join([*table, "", machine]))


if __name__ == "__main__":
    main()
