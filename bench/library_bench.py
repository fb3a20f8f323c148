"""The workload library's TLS: handshake cost, and how fast a rotated SVID reaches handshakes (issue 14).

1. Mutual TLS handshakes per second with pyspire.spiffe.tls contexts, next to plain
   ``ssl.SSLContext`` objects holding the same SVIDs and trusting the same roots (same TLS
   settings: TLS 1.3, client certificate required, no session tickets). Each handshake is a
   whole exchange between a client and a server in one thread over memory BIOs, so it measures
   the CPU both sides spend, with nothing else in the way. The kinds alternate handshake
   by handshake, each timed by the thread's CPU clock, so a shared machine's changing speed
   and other processes weigh on both alike. Two SPIFFE cases: the same peers connecting again
   (a context remembers a path it checked), and every handshake a first contact. Target:
   >= 90% of the plain rate.
2. Time from the agent pushing a new server SVID to the first handshake that presents it:
   handshakes run back to back against a server context over an X509Source while the agent
   rotates 16 s SVIDs; the push time is when an independent Workload API watch receives it.
   Target: < 1 s.

Both against a real pyspire-server and pyspire-agent started here. Run:
python bench/library_bench.py [--rotations 8] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from pyspire.spiffe import X509Source, tls  # noqa: E402
from pyspire.spiffe.workloadapi import WorkloadApiClient  # noqa: E402

from bench.results import update_section  # noqa: E402
from tests.support.identities import CLIENT, SERVER, Deployment, pick, start_deployment  # noqa: E402
from tests.support.workloads import register_this_process  # noqa: E402
from tests.support.x509_material import HandSetSource  # noqa: E402

BLOCKS = 9
PAIRS = 200
RATE_SERVER = "spiffe://example.org/rate/server"
RATE_CLIENT = "spiffe://example.org/rate/client"


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> ssl.SSLObject:
    """One complete TLS handshake between the two contexts over memory BIOs; the client's SSL object."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        client_in.write(server_out.read())
    return client


def plain_contexts(server: HandSetSource, client: HandSetSource) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Standard contexts holding the same SVIDs and roots, set up as the SPIFFE ones are."""
    roots = "".join(
        a.public_bytes(serialization.Encoding.PEM).decode() for b in server.bundles for a in b.x509_authorities
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_2
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.options |= ssl.OP_NO_TICKET
    server_context.num_tickets = 0
    tls.load_identity(server_context, server.svid.chain, server.svid.private_key)
    server_context.load_verify_locations(cadata=roots)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.minimum_version = ssl.TLSVersion.TLSv1_2
    client_context.check_hostname = False
    tls.load_identity(client_context, client.svid.chain, client.svid.private_key)
    client_context.load_verify_locations(cadata=roots)
    return server_context, client_context


def _cpu_seconds(operation: Callable[[], object]) -> float:
    start = time.thread_time()
    operation()
    return time.thread_time() - start


def handshake_rates(deployment: Deployment) -> dict[str, list[float]]:
    """Handshakes per CPU second of each kind, per block of PAIRS alternating handshakes, on
    material frozen from the agent's.

    The SVIDs are those of two hour-long entries, so none expires during the run.
    """
    for spiffe_id, hint in ((RATE_SERVER, "rate-server"), (RATE_CLIENT, "rate-client")):
        register_this_process(deployment.server, deployment.alias, spiffe_id, "-hint", hint)
    with (
        X509Source(deployment.agent.address, picker=pick("rate-server")) as s,
        X509Source(deployment.agent.address, picker=pick("rate-client")) as c,
    ):
        server, client = HandSetSource(s.svid, s.bundles), HandSetSource(c.svid, c.bundles)
    plain_server, plain_client = plain_contexts(server, client)
    spiffe_server = tls.server_context(server, tls.authorize_id(RATE_CLIENT))
    spiffe_client = tls.client_context(client, tls.authorize_id(RATE_SERVER))

    # A second pair that never remembers a checked path: every handshake is a first contact.
    first_server = tls.server_context(server, tls.authorize_id(RATE_CLIENT))
    first_client = tls.client_context(client, tls.authorize_id(RATE_SERVER))

    def first_contact() -> None:
        saved = tls.CHECKED_PATHS
        tls.CHECKED_PATHS = 0  # type: ignore[misc]
        try:
            handshake(first_server, first_client)
        finally:
            tls.CHECKED_PATHS = saved  # type: ignore[misc]

    kinds: dict[str, Callable[[], object]] = {
        "plain": lambda: handshake(plain_server, plain_client),
        "spiffe": lambda: handshake(spiffe_server, spiffe_client),
        "first": first_contact,
    }
    for _ in range(50):
        for operation in kinds.values():
            operation()
    found: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(BLOCKS):
        spent = dict.fromkeys(kinds, 0.0)
        for _ in range(PAIRS):
            for name, operation in kinds.items():
                spent[name] += _cpu_seconds(operation)
        for name, seconds in spent.items():
            found[name].append(PAIRS / seconds)
    return found


def ratio(found: dict[str, list[float]], name: str) -> float:
    return statistics.median(a / b for a, b in zip(found[name], found["plain"], strict=True))


def rotation_latencies(deployment: Deployment, rotations: int) -> list[float]:
    """Seconds from each server-SVID push (seen by an independent watch) to the first handshake presenting it."""
    pushes: dict[int, float] = {}
    stop = threading.Event()

    async def watch() -> None:
        async with WorkloadApiClient(deployment.agent.address) as client:
            async for context in client.watch_x509_contexts():
                svid = next(s for s in context.svids if s.hint == "server")
                pushes.setdefault(svid.leaf.serial_number, time.monotonic())
                if stop.is_set():
                    return

    watcher = threading.Thread(target=lambda: asyncio.run(watch()), daemon=True)
    watcher.start()
    seen: dict[int, float] = {}
    with (
        X509Source(deployment.agent.address, picker=pick("server")) as s,
        X509Source(deployment.agent.address, picker=pick("client")) as c,
    ):
        server = tls.server_context(s, tls.authorize_id(CLIENT))
        client = tls.client_context(c, tls.authorize_id(SERVER))
        deadline = time.monotonic() + 30 + 10 * rotations
        while len(seen) < rotations + 1 and time.monotonic() < deadline:
            peer = handshake(server, client).getpeercert(binary_form=True)
            assert peer is not None
            seen.setdefault(x509.load_der_x509_certificate(peer).serial_number, time.monotonic())
    stop.set()
    first = min(seen, key=seen.__getitem__)  # the SVID in place when the run began: its push was not watched
    return sorted(seen[serial] - pushes[serial] for serial in seen if serial != first and serial in pushes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rotations", type=int, default=8, help="server SVID rotations to time")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

    with tempfile.TemporaryDirectory(prefix="pyspire-library-bench-") as scratch:
        deployment = start_deployment(Path(scratch), "-x509SVIDTTL", "16", log_level="INFO")
        try:
            latencies = rotation_latencies(deployment, args.rotations)
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
            found = handshake_rates(deployment)
        finally:
            deployment.agent.stop()
            deployment.server.stop()

    plain, again, first = (statistics.median(found[n]) for n in ("plain", "spiffe", "first"))
    again_share, first_share = ratio(found, "spiffe"), ratio(found, "first")
    median_latency, worst_latency = statistics.median(latencies), max(latencies)
    rows = [
        ("plain ssl contexts, same SVIDs and roots (mutual TLS, TLS 1.3)", f"{plain:,.0f}/s", "", ""),
        (
            "pyspire.spiffe.tls contexts, the same peers connecting again",
            f"{again:,.0f}/s",
            f"{again_share:.0%} of plain",
            "met" if again_share >= 0.9 else "NOT MET",
        ),
        (
            "pyspire.spiffe.tls contexts, every handshake a first contact (SPIFFE checks of the path each time)",
            f"{first:,.0f}/s",
            f"{first_share:.0%} of plain",
            "",
        ),
        (
            f"agent push of a new server SVID to the first handshake presenting it ({len(latencies)} rotations), "
            "median / worst",
            f"{median_latency * 1000:.0f} / {worst_latency * 1000:.0f} ms",
            "",
            "met" if worst_latency < 1.0 else "NOT MET",
        ),
    ]
    table = ["| measure | result | ratio | target |", "|---|---|---|---|"]
    table += [f"| {name} | {value} | {share} | {target} |" for name, value, share, target in rows]
    machine = (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); handshakes pinned to one core, "
        f"client and server in one thread over memory BIOs, the three kinds alternating, each timed by the "
        f"thread's CPU clock; {BLOCKS} blocks of {PAIRS} handshakes of each kind, rates and ratios are medians "
        f"over the blocks; Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}; 16 s SVIDs from a real pyspire-agent; {datetime.now(UTC):%Y-%m-%d}"
    )
    body = "\n".join(
        [
            "Targets (issue 14): handshake rate with pyspire.spiffe.tls contexts >= 90% of plain ssl contexts",
            "holding the same certificates; a new SVID in handshakes < 1 s after the agent pushes it.",
            "",
            *table,
            "",
            machine,
        ]
    )
    print(body)
    if args.write:
        update_section("Workload library TLS (bench/library_bench.py)", body)


if __name__ == "__main__":
    main()
