"""A WorkloadAttestor written for the tests, installed for real agents through an entry point.

The probe records every PID it is asked about (so a test sees whether a call was attested at
all), can take its time (so a caller can exit while it is attested), and gives each caller the
selectors ``probe:ok`` and ``probe:name:<PROBE_NAME of the caller's environment>`` (so processes
of one user can be told apart without running them as other users).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config
from tests.support.plugins_in_tests import install_plugins
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

__all__ = ["ProbedAgent", "install_probe"]

_MODULE = '''
"""A WorkloadAttestor for tests (see tests/support/probe_attestor.py)."""

import time
from pathlib import Path

from pyspire.plugin import PluginError, hookimpl


class ProbeAttestor:
    @hookimpl
    def configure(self, plugin_data, core):
        self.log = Path(plugin_data["log_path"])
        self.delay = float(plugin_data.get("delay_seconds", "0"))

    @hookimpl
    def attest_workload(self, pid):
        with self.log.open("a") as log:
            log.write(f"{pid}\\n")
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\\0")
        except OSError as err:
            raise PluginError(f"probe: cannot read the environment of {pid}: {err}") from None
        names = [item[len(b"PROBE_NAME="):].decode() for item in environment if item.startswith(b"PROBE_NAME=")]
        time.sleep(self.delay)
        return ["ok", f"name:{names[0] if names else 'none'}"]
'''


def install_probe(directory: Path) -> dict[str, str]:
    """The probe as an installed distribution under ``directory``; the environment that finds it."""
    return install_plugins(directory, "pyspire_test_probe", _MODULE, {"agent": {"probe": "ProbeAttestor"}})


class ProbedAgent:
    """An agent whose only WorkloadAttestor is the probe, with an entry ``/probed`` for ``selector``.

    The default selector, ``probe:ok``, gives every caller ``/probed``; this test process (no
    ``PROBE_NAME``) alone has ``probe:name:none``. ``attested()`` lists the PIDs the probe was
    asked about; ``alias`` is the node alias that entries for this agent's workloads take as parent.
    """

    def __init__(self, directory: Path, server: ServerDaemon, delay: float = 0.0, selector: str = "probe:ok") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "probe.log"
        self.log.touch()
        self.alias = f"spiffe://example.org/node/{directory.name}"
        text, socket_path = agent_config(directory / "agent", server)
        probe = f'WorkloadAttestor "probe" {{\n plugin_data {{\n log_path = "{self.log}"\n delay_seconds = "{delay}"\n }}\n }}'
        text, replaced = re.subn(r'WorkloadAttestor "unix" \{\s*plugin_data \{\s*\}\s*\}', probe, text)
        assert replaced == 1
        self.daemon = AgentDaemon(
            "pyspire-agent",
            directory / "agent",
            socket_path,
            text,
            ["-joinToken", server.join_token(self.alias)],
            env=install_probe(directory / "plugins"),
        ).start()
        server.cli(
            "entry",
            "create",
            "-parentID",
            self.alias,
            "-spiffeID",
            "spiffe://example.org/probed",
            "-selector",
            selector,
        )
        eventually(lambda: x509_context(self.daemon).svids, timeout=30)

    def attested(self) -> list[int]:
        return [int(line) for line in self.log.read_text().split()]
