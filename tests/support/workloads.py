"""A workload of a real agent: register it under a parent, fetch its X.509 context, wait for its SVID."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError, X509Context

from tests.support.cgroups import Cgroup
from tests.support.daemons import AgentDaemon, ServerDaemon


def register_this_process(server: ServerDaemon, parent_id: str, spiffe_id: str, *flags: str) -> None:
    """An entry giving processes of this test's uid ``spiffe_id`` under ``parent_id`` (``flags``: more CLI flags)."""
    server.cli(
        "entry", "create", "-parentID", parent_id, "-spiffeID", spiffe_id, "-selector", f"unix:uid:{os.getuid()}",
        *flags,
    )  # fmt: skip


def x509_context(agent: AgentDaemon, timeout: float = 10.0) -> X509Context:
    """This process's X.509 context from ``agent``, as the Workload API gives it now."""

    async def fetch() -> X509Context:
        async with WorkloadApiClient(agent.address, timeout=timeout) as client:
            return await asyncio.wait_for(client.fetch_x509_context(), timeout)

    return asyncio.run(fetch())


def fetched_spiffe_id(agent: AgentDaemon, timeout: float = 30.0) -> str:
    """The default X509-SVID's ID this process gets from ``agent``, once the agent has one."""

    async def fetch() -> str:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            context = await asyncio.wait_for(client.fetch_x509_context(), timeout)
            return str(context.default_svid.spiffe_id)

    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(fetch())
        except (WorkloadApiError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


_FETCH_IN_CGROUP = """
import asyncio, sys
sys.stdin.readline()  # wait until the test has put this process in its cgroup
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError
async def main(tries):
    for _ in range(tries):  # until the agent has synced the entry just made
        try:
            async with WorkloadApiClient(sys.argv[1], timeout=10) as client:
                context = await asyncio.wait_for(client.fetch_x509_context(), 30)
            print(context.default_svid.spiffe_id)
            return
        except WorkloadApiError as err:
            last = err
            await asyncio.sleep(0.2)
    print(f"error: {last}")
asyncio.run(main(int(sys.argv[2])))
"""


def fetched_in_cgroup(cgroup_path: str, address: str, tries: int) -> str:
    """The SPIFFE ID a process in the cgroup at ``cgroup_path`` (a container's, a unit's) gets
    from the Workload API at ``address`` within ``tries`` attempts, or ``error: <why>``."""
    workload = subprocess.Popen(
        [sys.executable, "-c", _FETCH_IN_CGROUP, address, str(tries)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with Cgroup(cgroup_path) as cgroup:
            cgroup.add(workload.pid)
            out, _ = workload.communicate("go\n", timeout=60)
    finally:
        workload.kill()
        workload.wait()
    return out.strip()
