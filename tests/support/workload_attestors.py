"""Fixture bodies for a workload attestor's tests: processes to attest, and the plugin loaded.

Both clean up after the test (processes killed, handles closed), which is why they are
generators: a plugin's ``conftest``/test module yields from them in its own fixtures.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

__all__ = ["loaded_attestors", "spawned_processes"]


def spawned_processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``start(argv=None, **popen_kwargs)``: a process (``sleep 60`` unless told), killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv or ["sleep", "60"], **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def loaded_attestors(name: str, directory: Path) -> Iterator[Callable[..., WorkloadAttestor]]:
    """``configured(**plugin_data)``: the agent's WorkloadAttestor ``name`` loaded; closed after the test."""
    handles: list[WorkloadAttestor] = []

    def configured(**plugin_data: Any) -> WorkloadAttestor:
        handle = load_plugin("agent", "WorkloadAttestor", name, plugin_data, make_core_config(directory))
        assert isinstance(handle, WorkloadAttestor)
        handles.append(handle)
        return handle

    yield configured
    for handle in handles:
        handle.close()
