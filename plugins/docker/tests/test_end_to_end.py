"""A real server and agent issue by docker selectors to real processes in container cgroups."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from plugins.docker.tests.engine import Container, Engine
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_in_cgroup


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
        assert (
            fetched_in_cgroup(f"system.slice/docker-{web.id}.scope", agent.address, 100) == "spiffe://example.org/web"
        )
        # Another container on the same node: its label does not match, so no identity.
        refused = fetched_in_cgroup(f"docker/{other.id}", agent.address, 1)
        assert refused.startswith("error:")
        assert "no identity issued" in refused
        # The engine fails: the container cannot be described, so no identity, and the log says why.
        engine.failure = (500, "layer store is unavailable")
        failed = fetched_in_cgroup(f"system.slice/docker-{web.id}.scope", agent.address, 1)
        assert failed.startswith("error:")
        assert "workload attestor 'docker' failed" in failed
        assert "layer store is unavailable" in agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        engine.stop()
