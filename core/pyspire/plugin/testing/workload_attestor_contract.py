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
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.testing.loading import load_plugin, make_core_config

__all__ = ["WorkloadAttestorContract"]


class WorkloadAttestorContract:
    """Subclass as ``TestMyAttestor(WorkloadAttestorContract)`` and set ``plugin``."""

    plugin: ClassVar[str]
    plugin_class: ClassVar[type | None] = None

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        """The plugin's configuration for a test."""
        return {}

    @pytest.fixture
    def core_config(self, tmp_path: Path) -> CoreConfig:
        return make_core_config(tmp_path / "data")

    def load(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> WorkloadAttestor:
        handle = load_plugin(
            "agent", "WorkloadAttestor", self.plugin, plugin_data, core_config, plugin_class=self.plugin_class
        )
        assert isinstance(handle, WorkloadAttestor)
        return handle

    @pytest.fixture
    def attestor(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[WorkloadAttestor]:
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

    def test_unknown_configuration_key_is_refused(self, core_config: CoreConfig) -> None:
        with pytest.raises(CatalogError, match="no_such_key"):
            self.load({"no_such_key": True}, core_config)

    def test_live_process_gets_selectors_of_the_plugins_type(
        self, attestor: WorkloadAttestor, workload: subprocess.Popen[bytes]
    ) -> None:
        selectors = attestor.attest(workload.pid)
        assert selectors
        assert all(s.type == self.plugin and s.value for s in selectors)

    def test_vanished_process_is_an_error_not_zero_selectors(
        self, attestor: WorkloadAttestor, workload: subprocess.Popen[bytes]
    ) -> None:
        workload.kill()
        workload.wait()
        with pytest.raises(PluginError):
            attestor.attest(workload.pid)
