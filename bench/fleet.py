"""The fleet benchmark: many real agents syncing against one server (issue 3's target).

AGENTS agents, each a real attested agent with its own SVID and its own mTLS connection,
driven from PROCESSES client processes, each calling SyncAuthorizedEntries every INTERVAL
seconds (random phase) for DURATION seconds, against one server on SQLite holding
ENTRIES_PER_AGENT entries per agent. Measured: the server's CPU (user+system time over the
window, from /proc), sync latency p50/p99 as the agents see it, and missed syncs (failed, or
started a whole interval late). Targets (2-core machine): server below one core on average,
sync p99 < 50 ms, no sync missed.

Run: python bench/fleet.py [--agents 1000] [--entries-per-agent 100] [--duration 60] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402

from bench.results import update_section  # noqa: E402
from bench.server_bench import attest_all, create_entries, create_tokens, percentile  # noqa: E402
from tests.support.daemons import ServerDaemon, start_server  # noqa: E402

INTERVAL = 5.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(
    server: ServerDaemon, tokens: list[str], roots_pem: bytes, duration: float, start_at: float
) -> dict[str, Any]:
    roots = x509.load_pem_x509_certificates(roots_pem)
    clients = await attest_all(server, tokens, roots)
    known = []
    for client in clients:
        entries = await client.sync_entries({})
        known.append({e.id: e for e in entries})
    await asyncio.sleep(max(0.0, start_at - time.time()))
    latencies: list[float] = []
    missed = 0
    failures: list[str] = []

    async def agent_loop(index: int) -> None:
        nonlocal missed
        client = clients[index]
        next_at = time.monotonic() + random.uniform(0, INTERVAL)
        end = time.monotonic() + duration
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > INTERVAL:
                missed += 1
            started = time.perf_counter()
            try:
                entries = await client.sync_entries(known[index])
                if len(entries) != len(known[index]):
                    failures.append(f"agent {index} saw {len(entries)} entries, expected {len(known[index])}")
                latencies.append((time.perf_counter() - started) * 1000)
            except Exception as err:
                missed += 1
                failures.append(f"{type(err).__name__}: {err}")
            next_at += INTERVAL

    await asyncio.gather(*(agent_loop(i) for i in range(len(clients))))
    for client in clients:
        client.close()
    await asyncio.sleep(0.1)
    return {"latencies": latencies, "missed": missed, "failures": failures[:5]}


def _worker(
    server: ServerDaemon, tokens: list[str], roots_pem: bytes, duration: float, start_at: float, out: Any
) -> None:
    out.put(asyncio.run(_drive(server, tokens, roots_pem, duration, start_at)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--entries-per-agent", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pyspire-fleet-"))
    server = start_server(directory, extra="ratelimit {\n attestation = false\n }", log_level="INFO")
    try:
        roots_pem = server.bundle_pem().encode()
        tokens = asyncio.run(create_tokens(server, args.agents))
        create_seconds = asyncio.run(create_entries(server, tokens, args.entries_per_agent))
        print(f"{args.agents * args.entries_per_agent:,} entries created in {create_seconds:.1f} s", flush=True)

        # Attestation of the whole fleet happens before the window; the window starts for all
        # processes at one wall-clock time.
        start_at = time.time() + 20 + args.agents / 50
        context = multiprocessing.get_context("fork")
        out: Any = context.Queue()
        share = -(-len(tokens) // args.processes)
        workers = [
            context.Process(
                target=_worker, args=(server, tokens[i : i + share], roots_pem, args.duration, start_at, out)
            )
            for i in range(0, len(tokens), share)
        ]
        for worker in workers:
            worker.start()
        assert server.process is not None
        await_start = max(0.0, start_at - time.time())
        time.sleep(await_start)
        cpu_before = _cpu_seconds(server.process.pid)
        wall_before = time.monotonic()
        time.sleep(args.duration)
        cpu_used = _cpu_seconds(server.process.pid) - cpu_before
        wall = time.monotonic() - wall_before
        results = [out.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
    finally:
        server.stop()

    latencies = [v for r in results for v in r["latencies"]]
    missed = sum(r["missed"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    cores = cpu_used / wall
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    expected = args.agents * args.duration / INTERVAL
    rows = [
        ("syncs completed", f"{len(latencies):,} (about {expected:,.0f} scheduled)", "", None),
        ("server CPU, average over the window", f"{cores:.2f} cores", "< 1 core", cores < 1),
        ("sync latency as agents see it, p50 / p99", f"{p50:.1f} / {p99:.1f} ms", "p99 < 50 ms", p99 < 50),
        ("missed syncs", f"{missed}", "0", missed == 0),
    ]
    table = ["| measure | result | target | |", "|---|---|---|---|"]
    for name, value, target, met in rows:
        verdict = "" if met is None else ("met" if met else "**missed**")
        table.append(f"| {name} | {value} | {target} | {verdict} |")
        print(f"{name}: {value} {target} {verdict}")
    if failures:
        print("failures:", failures)
    body = "\n".join(
        [
            f"{args.agents:,} attested agents (own SVID, own mTLS connection) driven from {args.processes} processes,"
            f" each syncing every {INTERVAL:g} s for {args.duration:g} s; {args.entries_per_agent} entries per agent"
            f" ({args.agents * args.entries_per_agent:,} in all) on SQLite. The client processes run on the same"
            " 2 cores as the server.",
            "",
            *table,
            "",
            f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()};"
            f" {datetime.now(UTC):%Y-%m-%d}",
        ]
    )
    if args.write:
        update_section("Fleet (bench/fleet.py)", body)


if __name__ == "__main__":
    main()
