"""A real server and agent issue by systemd unit to real processes, over a real dbus-daemon."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from plugins.systemd.tests.bus import FakeSystemd, SystemBus, UnitCgroup
from tests.support.daemons import start_agent, start_server

_FETCH = """
import asyncio, sys
sys.stdin.readline()  # wait until the test has put this process in its unit's cgroup
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


def _fetch_in(unit_cgroup: str, address: str, tries: int) -> str:
    """What a process of the unit at ``unit_cgroup`` gets from the Workload API at ``address``."""
    workload = subprocess.Popen(
        [sys.executable, "-c", _FETCH, address, str(tries)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with UnitCgroup(unit_cgroup) as cgroup:
            cgroup.add(workload.pid)
            out, _ = workload.communicate("go\n", timeout=60)
    finally:
        workload.kill()
        workload.wait()
    return out.strip()


@pytest.mark.slow
def test_an_agent_issues_by_systemd_unit_and_fails_closed(tmp_path: Path) -> None:
    bus = SystemBus(tmp_path / "bus").start()
    systemd = FakeSystemd(bus, tmp_path / "units").start()
    unit_file = systemd.units / "web.service"
    unit_file.write_text("[Service]\nExecStart=/usr/local/bin/web\n")
    server = start_server(tmp_path / "server")
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        agent = start_agent(
            tmp_path / "agent",
            server,
            server.join_token(alias),
            node_attestor='NodeAttestor "join_token" { plugin_data {} }\nWorkloadAttestor "systemd" {}',
            env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address},
        )
        server.cli(
            "entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/web",
            "-selector", "systemd:id:web.service", "-selector", f"systemd:fragment_path:{unit_file}",
        )  # fmt: skip
        assert _fetch_in("system.slice/web.service", agent.address, 100) == "spiffe://example.org/web"
        # A process of another unit: its selectors do not match, so no identity.
        refused = _fetch_in("system.slice/batch.service", agent.address, 1)
        assert refused.startswith("error:")
        assert "no identity issued" in refused
        # systemd leaves the bus: the unit cannot be known, so no identity, and the log says why.
        systemd.stop()
        failed = _fetch_in("system.slice/web.service", agent.address, 1)
        assert failed.startswith("error:")
        assert "workload attestor 'systemd' failed" in failed
        assert "org.freedesktop.DBus.Error.ServiceUnknown" in agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        systemd.stop()
        bus.stop()
