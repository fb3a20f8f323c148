"""WorkloadAttestor "k8s" under the WorkloadAttestor contract: a real process in a pod's cgroup, a kubelet fake."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import WorkloadAttestorContract

from plugins.k8s_psat.tests.kubelet import Container, Kubelet, Pod, PodCgroup, container_id


class TestK8sWorkloadContract(WorkloadAttestorContract):
    plugin = "k8s"

    @pytest.fixture
    def pod(self) -> Pod:
        return Pod(uid=str(uuid.uuid4()), containers=[Container("app", container_id())])

    @pytest.fixture
    def kubelet(self, tmp_path: Path, pod: Pod) -> Iterator[Kubelet]:
        server = Kubelet(pods=[pod]).start(tmp_path)
        yield server
        server.stop()

    @pytest.fixture
    def plugin_data(self, kubelet: Kubelet, tmp_path: Path) -> Mapping[str, Any]:
        token = tmp_path / "token"
        token.write_text(kubelet.token)
        return {
            "kubelet_secure_port": kubelet.port,
            "kubelet_ca_path": str(kubelet.ca_path),
            "token_path": str(token),
            "max_poll_attempts": 1,
        }

    @pytest.fixture
    def workload(self, pod: Pod) -> Iterator[subprocess.Popen[bytes]]:
        """A live process in the cgroup of the pod's container."""
        process = subprocess.Popen(["sleep", "60"])
        try:
            with PodCgroup(pod.uid, pod.containers[0].container_id) as cgroup:
                cgroup.add(process.pid)
                yield process
        finally:
            process.kill()
            process.wait()
