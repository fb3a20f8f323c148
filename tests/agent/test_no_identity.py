"""A workload with no entry, then with one (reliability case 2), on a real agent.

The newcomer is a process of this test's user told apart by the probe attestor's
``probe:name`` selector; this test process holds an X.509 stream of its own meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire.spiffe.workloadapi import WorkloadApiClient

from tests.support.daemons import ServerDaemon, start_server
from tests.support.probe_attestor import ProbedAgent

SYNC_INTERVAL = 1.0  # tests.support.daemons.agent_config's experimental.sync_interval

NEWCOMER = """
import asyncio, json, sys, time
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub

HEADER = {"workload.spiffe.io": "true"}


async def stream(stub, method, request):
    async with getattr(stub, method).open(metadata=HEADER, timeout=10) as call:
        await call.send_message(request, end=True)
        reply = await call.recv_message()
        await call.cancel()
    return reply


async def outcome(method, request):
    channel = Channel(path=sys.argv[1])
    stub = SpiffeWorkloadAPIStub(channel)
    try:
        if method == "FetchJWTSVID":
            reply = await stub.FetchJWTSVID(request, metadata=HEADER, timeout=10)
        else:
            reply = await stream(stub, method, request)
        return {"ok": [svid.spiffe_id for svid in getattr(reply, "svids", [])]}
    except GRPCError as err:
        return {"status": err.status.name, "message": err.message}
    finally:
        channel.close()


async def main():
    calls = {
        "FetchX509SVID": pb.X509SVIDRequest(),
        "FetchX509Bundles": pb.X509BundlesRequest(),
        "FetchJWTBundles": pb.JWTBundlesRequest(),
        "FetchJWTSVID": pb.JWTSVIDRequest(audience=["a"]),
    }
    print(json.dumps({method: await outcome(method, request) for method, request in calls.items()}), flush=True)
    sys.stdin.readline()  # the test has registered this process
    started = time.monotonic()
    while True:
        result = await outcome("FetchX509SVID", pb.X509SVIDRequest())
        if "ok" in result:
            print(json.dumps({"svids": result["ok"], "after": time.monotonic() - started}), flush=True)
            return
        await asyncio.sleep(0.1)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


def test_no_identity_then_an_entry_reaches_the_newcomer_and_no_one_else_notices(
    server: ServerDaemon, tmp_path: Path
) -> None:
    probed = ProbedAgent(tmp_path / "probed", server, selector="probe:name:none")
    script = tmp_path / "newcomer.py"
    script.write_text(NEWCOMER)

    async def run() -> tuple[dict[str, dict[str, object]], dict[str, object], list[str], bool]:
        watcher_updates: list[str] = []
        first_update = asyncio.Event()

        async def watch(client: WorkloadApiClient) -> None:
            async for context in client.watch_x509_contexts():
                watcher_updates.append(str(context.default_svid.spiffe_id))
                first_update.set()

        async with WorkloadApiClient(probed.daemon.address) as client:
            watching = asyncio.ensure_future(watch(client))
            await asyncio.wait_for(first_update.wait(), 20)

            newcomer = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                str(probed.daemon.socket_path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PROBE_NAME": "newcomer"},
            )
            assert newcomer.stdin is not None
            assert newcomer.stdout is not None
            refused = json.loads(await asyncio.wait_for(newcomer.stdout.readline(), 60))
            await asyncio.to_thread(
                server.cli,
                "entry", "create", "-parentID", probed.alias, "-spiffeID", "spiffe://example.org/newcomer",
                "-selector", "probe:name:newcomer",
            )  # fmt: skip
            newcomer.stdin.write(b"go\n")
            await newcomer.stdin.drain()
            served = json.loads(await asyncio.wait_for(newcomer.stdout.readline(), 60))
            await newcomer.wait()
            # The watcher's stream was neither ended nor pushed anything: nothing changed for it.
            await asyncio.sleep(SYNC_INTERVAL)
            undisturbed = not watching.done()
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        return refused, served, watcher_updates, undisturbed

    started = time.monotonic()
    refused, served, watched, undisturbed = asyncio.run(run())
    for method, outcome in refused.items():
        assert outcome.get("status") == "PERMISSION_DENIED", (method, outcome)
        assert "no identity issued" in str(outcome["message"]), (method, outcome)
    assert served["svids"] == ["spiffe://example.org/newcomer"]
    # Within the agent's sync interval (and the entry's way through the server), not at some later reload.
    assert float(served["after"]) < SYNC_INTERVAL + 5, served  # type: ignore[arg-type]
    assert watched == ["spiffe://example.org/probed"]
    assert undisturbed
    assert time.monotonic() - started < 60
    probed.daemon.stop()
