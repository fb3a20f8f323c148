"""A real server and agent issue by systemd unit to real processes, over a real dbus-daemon."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from plugins.systemd.tests.bus import FakeSystemd, SystemBus
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_in_cgroup


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
        assert fetched_in_cgroup("system.slice/web.service", agent.address, 100) == "spiffe://example.org/web"
        # A process of another unit: its selectors do not match, so no identity.
        refused = fetched_in_cgroup("system.slice/batch.service", agent.address, 1)
        assert refused.startswith("error:")
        assert "no identity issued" in refused
        # systemd leaves the bus: the unit cannot be known, so no identity, and the log says why.
        systemd.stop()
        failed = fetched_in_cgroup("system.slice/web.service", agent.address, 1)
        assert failed.startswith("error:")
        assert "workload attestor 'systemd' failed" in failed
        assert "org.freedesktop.DBus.Error.ServiceUnknown" in agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        systemd.stop()
        bus.stop()
