"""What every WorkloadAttestor must do, whatever it inspects.

The agent relies on three promises: a plugin refuses a configuration it does not understand,
it answers for a live process with well-formed selector values, and it raises (never answers
an empty list) when it cannot inspect the process — otherwise a workload could be served an
identity chosen on partial facts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.types import Role

__all__ = ["WorkloadAttestorContract"]


class WorkloadAttestorContract(PluginContract):
    """Subclass as ``TestMyAttestor(WorkloadAttestorContract)`` and set ``plugin``.

    Override ``workload`` when the plugin has something to say only about particular
    processes (a container's, a pod's): it yields a live process the plugin can attest.
    """

    role: ClassVar[Role] = "agent"
    plugin_type: ClassVar[str] = "WorkloadAttestor"

    def load(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> WorkloadAttestor:
        """Load the plugin through the catalog."""
        handle = super().load(plugin_data, core_config)
        assert isinstance(handle, WorkloadAttestor)
        return handle

    @pytest.fixture
    def attestor(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[WorkloadAttestor]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        yield handle
        handle.close()

    @pytest.fixture
    def workload(self) -> Iterator[subprocess.Popen[bytes]]:
        """A live process to attest: a sleeping Python interpreter."""
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        yield process
        process.kill()
        process.wait()

    def test_live_process_gets_selectors_of_the_plugins_type(
        self, attestor: WorkloadAttestor, workload: subprocess.Popen[bytes]
    ) -> None:
        selectors = attestor.attest(workload.pid)
        assert selectors
        assert all(s.type == self.plugin and s.value for s in selectors)
        for selector in selectors:
            assert not selector.value.startswith(f"{self.plugin}:"), (
                f'selector "{selector}" repeats the plugin name: return "{selector.value.partition(":")[2]}", '
                f'the core adds "{self.plugin}:"'
            )

    def test_vanished_process_is_an_error_not_zero_selectors(
        self, attestor: WorkloadAttestor, workload: subprocess.Popen[bytes]
    ) -> None:
        workload.kill()
        workload.wait()
        with pytest.raises(PluginError) as raised:
            attestor.attest(workload.pid)
        assert_deliberate(raised.value, attestor)
