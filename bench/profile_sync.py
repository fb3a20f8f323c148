"""Where a pyspire-server spends its CPU on an unchanged agent sync: a sampled profile (issue 21).

bench/vs_spire.py finds pyspire's server spending several times SPIRE's CPU on each unchanged
sync. This script says where that CPU goes, so that work on it starts from a measurement: a
server with N agents x M entries (SQLite), each agent's SyncAuthorizedEntries repeated with
nothing changed, while py-spy samples the server process's thread holding the interpreter
lock: Python's CPU. (Sampled without ``--gil``, the socket writes' system calls, made without
the lock, took half the samples while /proc put the server's system time at a ninth of its
CPU.) Stacks waiting for work (the event loop's select, idle pool threads) are left out; the
busy ones are attributed to the first of these phases that the innermost frames reach:

- datastore: the node lookup (on the event loop on SQLite, else in a pool thread) and the
  change-log reads;
- authorization: the caller's SVID checked against its node record (the datastore read excluded);
- handler: SyncAuthorizedEntries itself (the entries the agent may see, the diff it is sent);
- gRPC and HTTP/2: grpclib's stream handling, h2's framing, metadata and deadlines;
- TLS: reading and writing through asyncio's SSL protocol;
- thread hand-offs: a datastore call sent to a pool thread and its answer back to the loop;
- other: the event loop's own bookkeeping, telemetry.

Run: python bench/profile_sync.py [--agents 100] [--entries-per-agent 10] [--rounds 10] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from pyspire.agent.cache import WorkloadEntry
from pyspire.agent.client import ServerClient

from bench.results import update_section
from bench.server_bench import attest_all, create_entries, create_tokens
from tests.support.daemons import start_server

RATE_LIMITS_OFF = "ratelimit {\n attestation = false\n signing = false\n }"
IDLE_FUNCTIONS = frozenset({"_worker", "select", "wait"})
"""Leaf functions of a stack that is waiting: a pool thread's queue, the loop's selector."""

PHASES = (
    ("datastore", ("DataStore.",)),
    ("authorization", ("authorize (",)),
    ("handler", ("EntryService.SyncAuthorizedEntries (",)),
    ("gRPC and HTTP/2", ("grpclib/", "h2/", "hpack/")),
    ("TLS", ("sslproto.py", "ssl.py")),
    ("thread hand-offs", ("call_soon_threadsafe (", "_write_to_self (", "run_in_executor (", "to_thread (")),
)


def _phase(frames: list[str]) -> str:
    """The phase of the innermost frame that names one (a datastore read under authorization is the datastore's)."""
    for frame in reversed(frames):
        for name, markers in PHASES:
            if any(marker in frame for marker in markers):
                return name
    return "other"


def breakdown(raw: Path) -> tuple[Counter[str], int]:
    """Busy samples by phase, and all busy samples, from py-spy's raw (collapsed) output."""
    phases: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or frames[-1].split(" (", 1)[0].rsplit(".", 1)[-1] in IDLE_FUNCTIONS:
            continue
        phases[_phase(frames)] += int(count)
        busy += int(count)
    return phases, busy


async def _known(clients: list[ServerClient]) -> list[dict[str, WorkloadEntry]]:
    known = []
    for client in clients:
        entries = await client.sync_entries({})
        known.append({entry.id: entry for entry in entries})
    return known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--entries-per-agent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]' installs it")
    directory = Path(tempfile.mkdtemp(prefix="pyspire-profile-"))
    raw = directory / "sync.collapsed"
    server = start_server(directory / "server", extra=RATE_LIMITS_OFF, log_level="WARN")
    roots = x509.load_pem_x509_certificates(server.bundle_pem().encode())

    async def scenario() -> tuple[int, float]:
        tokens = await create_tokens(server, args.agents)
        clients = await attest_all(server, tokens, roots)
        await create_entries(server, tokens, args.entries_per_agent)
        known = await _known(clients)
        assert server.process is not None
        command = [spy, "record", "--pid", str(server.process.pid), "--gil", "--format", "raw"]
        command += ["--rate", str(args.rate)]
        sampler = subprocess.Popen(
            [*command, "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # py-spy attached
        started = time.perf_counter()
        for _ in range(args.rounds):
            for client, seen in zip(clients, known, strict=True):
                await client.sync_entries(seen)
        elapsed = time.perf_counter() - started
        sampler.send_signal(signal.SIGINT)
        sampler.wait(60)
        for client in clients:
            client.close()
        return args.rounds * len(clients), elapsed

    try:
        syncs, elapsed = asyncio.run(scenario())
    finally:
        server.stop()
    phases, busy = breakdown(raw)
    if not busy:
        raise SystemExit(f"py-spy recorded no busy samples (see {raw})")
    names = [name for name, _ in PHASES] + ["other"]
    rows = [f"| {name} | {phases[name] / busy * 100:.0f}% |" for name in names]
    fleet = f"{args.agents} agents x {args.entries_per_agent} entries"
    body = "\n".join(
        [
            f"Server samples holding the interpreter lock, by phase, {syncs:,} unchanged SyncAuthorizedEntries calls "
            f"({fleet}, SQLite, "
            f"{syncs / elapsed:.0f} calls/s from one client process):",
            "",
            "| phase | share of the server's busy samples |",
            "|---|---|",
            *rows,
            "",
            f"{busy:,} busy samples at {args.rate}/s; py-spy; {os.cpu_count()} CPUs ({platform.machine()}), "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end; "
            f"{datetime.now(UTC):%Y-%m-%d}",
        ]
    )
    print(body)
    if args.write:
        update_section("Where an unchanged sync's CPU goes (bench/profile_sync.py)", body)


if __name__ == "__main__":
    main()
