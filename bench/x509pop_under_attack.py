"""Legitimate x509pop attestations while hostile ones pour in: reliability case 13's p99, beside SPIRE.

The case asks that legitimate agents are not slowed by an attack, measured by the p99 of
their attestation latency. SPIRE's server and pyspire's run side by side (x509pop, the
attestation rate limit off on both, so nothing but the server's own work stands between the
attacker and it); against each in turn:

- this process attests fresh x509pop nodes one after another (the agent plugin answers the
  challenge) and times each AttestAgent call, TLS handshake included;
- an attacker process with ``--streams`` concurrent loops, paced to start each of ``--rates``
  calls a second between them (the same attack for both servers) or, at rate 0, flooding as
  fast as the server answers (a costlier refusal then means fewer calls), sends in turn a chain of 1,000
  intermediates, a 16k-bit RSA leaf, and a well-formed node certificate of another CA that
  goes through the challenge before it is refused.

Rounds alternate quiet and under attack, and the two servers (this machine's speed drifts
within a minute). The attacker shares the machine's cores with the server and with the
legitimate client, so part of any slowdown is the machine's, alike for both servers.
Target: pyspire's p99 under attack <= 2x its quiet p99, or no worse than SPIRE's slowdown.

Run: python bench/x509pop_under_attack.py [--rounds 4] [--per-round 50] [--streams 4] [--rates 25,0] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from grpclib.exceptions import GRPCError  # noqa: E402
from pyspire.agent.client import ServerClient  # noqa: E402
from pyspire.crypto import LocalSigner, build_csr  # noqa: E402
from pyspire.spiffe import TrustDomain  # noqa: E402

from bench.results import update_section  # noqa: E402
from bench.server_bench import percentile  # noqa: E402
from tests.plugin.test_x509pop import node_certificate  # noqa: E402
from tests.support import peers  # noqa: E402
from tests.support.daemons import ServerDaemon, start_server  # noqa: E402
from tests.support.hostile_x509pop import oversized_chain_payload, oversized_rsa_leaf_payload  # noqa: E402
from tests.support.pki import Issued, make_ca  # noqa: E402
from tests.support.x509pop_nodes import PopNode, x509pop_server_plugin  # noqa: E402

TITLE = "x509pop attestation under attack (bench/x509pop_under_attack.py)"
SIDES = ("SPIRE", "pyspire")
TARGET = 2.0
TD = TrustDomain.parse("example.org")


async def _refused_payload(port: int, roots: list[x509.Certificate], payload: bytes) -> None:
    client = ServerClient([("127.0.0.1", port)], TD)
    client.set_roots(roots)

    async def junk(_challenge: bytes) -> bytes:
        # SPIRE before 1.13.4 has no size limits and challenges an oversized chain or key; the
        # attacker, who holds no key, answers with junk.
        return b'{"x509pop": {"signature": ""}}'

    csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
    try:
        with contextlib.suppress(GRPCError):
            await client.attest("x509pop", payload, csr, junk)
    finally:
        client.close()


def _attack(
    port: int,
    roots_pem: bytes,
    root_pem: bytes,
    root_key_pem: bytes,
    scratch: str,
    streams: int,
    rate: float,
    sent: Any,
) -> None:
    """The attacker process: ``streams`` loops of hostile attestations until it is terminated.

    The loops together start ``rate`` calls a second (as long as the server keeps up), so both
    servers face the same attack; with ``rate`` 0 each loop goes as fast as the server answers.
    ``sent`` is a shared counter of the hostile calls made. The root's key comes as PEM: a
    spawned process gets its arguments pickled, and keys do not.
    """
    roots = x509.load_pem_x509_certificates(roots_pem)
    root = Issued(
        x509.load_pem_x509_certificate(root_pem),
        serialization.load_pem_private_key(root_key_pem, None),  # type: ignore[arg-type]
    )
    hostile = [oversized_chain_payload(root), oversized_rsa_leaf_payload(root)]
    stranger = PopNode(Path(scratch) / "stranger", node_certificate(make_ca(name="someone else's root")))

    started = time.monotonic()
    interval = streams / rate if rate > 0 else 0.0

    async def paced(loop_number: int, call: int) -> None:
        if interval:
            due = started + (call + loop_number / streams) * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        with sent.get_lock():
            sent.value += 1

    async def loop(loop_number: int) -> None:
        call = 0
        while True:
            for payload in hostile:
                await paced(loop_number, call)
                call += 1
                await _refused_payload(port, roots, payload)
            await paced(loop_number, call)
            call += 1
            with contextlib.suppress(GRPCError):
                client, _, _ = await stranger.attest(port, roots)
                client.close()

    async def main() -> None:
        await asyncio.gather(*(loop(n) for n in range(streams)))

    asyncio.run(main())


async def _timed(nodes: list[PopNode], port: int, roots: list[x509.Certificate]) -> list[float]:
    durations = []
    for node in nodes:
        started = time.perf_counter()
        client, _, _ = await node.attest(port, roots)
        durations.append(time.perf_counter() - started)
        client.close()
    return durations


@dataclass
class Side:
    """One server under test and what its legitimate nodes measured."""

    name: str
    server: ServerDaemon
    roots_pem: bytes
    nodes: list[PopNode]
    quiet: list[float] = field(default_factory=list)
    attacked: dict[float, list[float]] = field(default_factory=dict)
    """Per attack rate: the legitimate attestations' latencies."""
    hostile: dict[float, tuple[int, float]] = field(default_factory=dict)
    """Per attack rate: hostile calls started, and the seconds the attack ran while timed."""


def _start_side(name: str, executable: Path | None, directory: Path, root: Issued, count: int) -> Side:
    directory.mkdir(parents=True)
    (directory / "roots.pem").write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    server = start_server(
        directory / "server",
        executable=executable,
        extra="ratelimit {\n attestation = false\n }",
        plugins=x509pop_server_plugin(directory / "roots.pem"),
        log_level="WARN",
    )
    nodes = [PopNode(directory / f"node-{i}", node_certificate(root, common_name=f"legit-{i}")) for i in range(count)]
    return Side(name, server, server.bundle_pem().encode(), nodes)


def _batch(side: Side, size: int) -> list[PopNode]:
    batch, side.nodes = side.nodes[:size], side.nodes[size:]
    return batch


def _round(side: Side, args: argparse.Namespace, rate: float, root: Issued, scratch: Path, spawn: Any) -> None:
    """One quiet batch, then one batch while the attacker process runs against ``side``'s server."""
    roots = x509.load_pem_x509_certificates(side.roots_pem)
    side.quiet += asyncio.run(_timed(_batch(side, args.per_round), side.server.port, roots))
    sent = spawn.Value("l", 0)
    attacker = spawn.Process(
        target=_attack,
        args=(
            side.server.port,
            side.roots_pem,
            root.certificate.public_bytes(serialization.Encoding.PEM),
            root.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            str(scratch),
            args.streams,
            rate,
            sent,
        ),
    )
    attacker.start()
    deadline = time.monotonic() + 60
    try:
        while sent.value < args.streams:  # the attack is under way before timing
            assert attacker.is_alive(), "the attacker process died"
            assert time.monotonic() < deadline, "the attack never got going"
            time.sleep(0.05)
        before, started = sent.value, time.monotonic()
        side.attacked.setdefault(rate, []).extend(
            asyncio.run(_timed(_batch(side, args.per_round), side.server.port, roots))
        )
        calls, seconds = side.hostile.get(rate, (0, 0.0))
        side.hostile[rate] = (calls + sent.value - before, seconds + time.monotonic() - started)
    finally:
        attacker.terminate()
        attacker.join(10)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _rate_name(rate: float) -> str:
    return f"{rate:g} hostile calls/s" if rate > 0 else "a flood (each loop as fast as answered)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=50, help="legitimate attestations per round and condition")
    parser.add_argument("--streams", type=int, default=4, help="concurrent hostile loops in the attacker process")
    parser.add_argument(
        "--rates", default="25,0", help="attack rates to measure, hostile calls started per second (0: a flood)"
    )
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    scratch = Path(tempfile.mkdtemp(prefix="pyspire-bench-x509pop-"))
    root = make_ca(name="fleet root")
    count = (2 * args.rounds * len(rates) + 1) * args.per_round
    spire = peers.spire()
    spawn = multiprocessing.get_context("spawn")
    sides: list[Side] = []
    try:
        sides.append(_start_side("SPIRE", spire.path("spire-server"), scratch / "spire", root, count))
        sides.append(_start_side("pyspire", None, scratch / "pyspire", root, count))
        for side in sides:  # warm-up, not counted
            roots = x509.load_pem_x509_certificates(side.roots_pem)
            asyncio.run(_timed(_batch(side, args.per_round), side.server.port, roots))
        for round_number in range(args.rounds):
            for rate in rates:
                for side in sides:
                    _round(side, args, rate, root, scratch / f"attacker-{side.name}-{rate:g}-{round_number}", spawn)
                    print(
                        f"round {round_number + 1}, {_rate_name(rate)}, {side.name}: quiet p99 "
                        f"{_ms(percentile(side.quiet, 99))}, under attack p99 "
                        f"{_ms(percentile(side.attacked[rate], 99))}",
                        flush=True,
                    )
        for side in sides:
            assert side.server.process is not None
            assert side.server.process.poll() is None, f"{side.name}'s server died"
    finally:
        for side in sides:
            side.server.stop()
    rows, verdicts = [], []
    for rate in rates:
        slowdown = {side.name: percentile(side.attacked[rate], 99) / percentile(side.quiet, 99) for side in sides}
        for side in sides:
            calls, seconds = side.hostile[rate]
            rows.append(
                f"| {_rate_name(rate)} | {side.name} | {_ms(statistics.median(side.quiet))} "
                f"| {_ms(percentile(side.quiet, 99))} | {_ms(statistics.median(side.attacked[rate]))} "
                f"| {_ms(percentile(side.attacked[rate], 99))} | {slowdown[side.name]:.2f} | {calls / seconds:.0f} /s |"
            )
        mine = slowdown["pyspire"]
        verdict = "met" if mine <= max(TARGET, slowdown["SPIRE"]) else "MISSED"
        verdicts.append(
            f"- {_rate_name(rate)}: pyspire's p99 slowdown **{mine:.2f}**, SPIRE's {slowdown['SPIRE']:.2f} "
            f"(target: <= {TARGET:.1f}, or no worse than SPIRE's): {verdict}"
        )
    body = "\n".join(
        [
            "| attack | server | quiet p50 | quiet p99 | under attack p50 | under attack p99 | p99 slowdown "
            "| hostile calls made |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *verdicts,
            "",
            f"SPIRE {peers.SPIRE_VERSION} and pyspire on the same machine, alternating rounds; {args.rounds} rounds "
            f"of {args.per_round} legitimate attestations per condition and server, an attacker process with "
            f"{args.streams} hostile loops; SQLite; {os.cpu_count()} CPUs ({platform.machine()}), Python "
            f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d}",
        ]
    )
    print(body)
    if args.write:
        update_section(TITLE, body)


if __name__ == "__main__":
    main()
