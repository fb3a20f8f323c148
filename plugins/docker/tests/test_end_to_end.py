"""A real server and agent issue by docker selectors to real processes in container cgroups."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from plugins.docker.tests.cgroups import RuntimeCgroup
from plugins.docker.tests.engine import Container, Engine
from tests.support.daemons import start_agent, start_server

_FETCH = """
import asyncio, sys
sys.stdin.readline()  # wait until the test has put this process in its container's cgroups
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


def _fetch_in(cgroup_path: str, address: str, tries: int) -> str:
    """What a process in the cgroups at ``cgroup_path`` gets from the Workload API at ``address``."""
    workload = subprocess.Popen(
        [sys.executable, "-c", _FETCH, address, str(tries)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with RuntimeCgroup(cgroup_path) as cgroup:
            cgroup.add(workload.pid)
            out, _ = workload.communicate("go\n", timeout=60)
    finally:
        workload.kill()
        workload.wait()
    return out.strip()


@pytest.mark.slow
def test_an_agent_issues_by_container_label_and_image_and_fails_closed(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "engine" / "docker.sock").start()
    web = engine.add(Container(labels={"com.example.name": "web"}))
    other = engine.add(Container(labels={"com.example.name": "batch"}))
    server = start_server(tmp_path / "server")
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        attestor = f'WorkloadAttestor "docker" {{\n plugin_data {{\n  docker_socket_path = "{engine.url}"\n }}\n }}'
        agent = start_agent(
            tmp_path / "agent",
            server,
            server.join_token(alias),
            node_attestor=f'NodeAttestor "join_token" {{ plugin_data {{}} }}\n{attestor}',
        )
        server.cli(
            "entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/web",
            "-selector", "docker:label:com.example.name:web",
            "-selector", "docker:image_id:envoyproxy/envoy:contrib-v1.29.1",
        )  # fmt: skip
        assert _fetch_in(f"system.slice/docker-{web.id}.scope", agent.address, 100) == "spiffe://example.org/web"
        # Another container on the same node: its label does not match, so no identity.
        refused = _fetch_in(f"docker/{other.id}", agent.address, 1)
        assert refused.startswith("error:")
        assert "no identity issued" in refused
        # The engine fails: the container cannot be described, so no identity, and the log says why.
        engine.failure = (500, "layer store is unavailable")
        failed = _fetch_in(f"system.slice/docker-{web.id}.scope", agent.address, 1)
        assert failed.startswith("error:")
        assert "workload attestor 'docker' failed" in failed
        assert "layer store is unavailable" in agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        engine.stop()
