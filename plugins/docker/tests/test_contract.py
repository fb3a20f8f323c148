"""WorkloadAttestor "docker" under the WorkloadAttestor contract: a real process in a container's cgroups."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import WorkloadAttestorContract

from plugins.docker.tests.engine import Container, Engine
from tests.support.cgroups import Cgroup


class TestDockerContract(WorkloadAttestorContract):
    plugin = "docker"

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        server = Engine(tmp_path / "engine" / "docker.sock").start()
        server.add(Container())
        yield server
        server.stop()

    @pytest.fixture
    def plugin_data(self, engine: Engine) -> Mapping[str, Any]:
        return {"docker_socket_path": engine.url}

    @pytest.fixture
    def workload(self, engine: Engine) -> Iterator[subprocess.Popen[bytes]]:
        """A live process in the cgroups of the container the engine knows."""
        (container,) = engine.containers
        process = subprocess.Popen(["sleep", "60"])
        try:
            with Cgroup(f"system.slice/docker-{container}.scope") as cgroup:
                cgroup.add(process.pid)
                yield process
        finally:
            process.kill()
            process.wait()
