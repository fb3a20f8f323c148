"""A CLI call loads what its verb needs, not the daemon's configuration machinery.

The suite and operators' scripts run ``entry show``, ``bundle show`` and ``api fetch`` by the
hundred; loading the config schema, the plugin catalogue, entry-point metadata and the
Workload API's blocking client with each cost a third of every call's start-up (0.62 s of CPU
against 0.45 s). The check runs the real command in a fresh interpreter and reads its
``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

NOT_FOR_ADMIN_VERBS = (
    "pyspire.config.daemon_config",
    "pyspire.config.plugins",
    "pyspire.plugin.catalog",
    "pyspire.spiffe.blocking",
    "importlib.metadata",
)

PROGRAM = """
import sys
from {module} import main
main({argv!r})
print("\\n".join(sorted(sys.modules)))
"""


def modules_after(module: str, argv: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("pyspire.server.cli", ["entry", "show", "-socketPath", "{socket}"]),
        ("pyspire.server.cli", ["bundle", "show", "-socketPath", "{socket}"]),
        ("pyspire.agent.cli", ["api", "fetch", "x509", "-socketPath", "{socket}"]),
    ],
)
def test_an_admin_verb_does_not_load_the_configuration_machinery(tmp_path: Path, module: str, argv: list[str]) -> None:
    socket = str(tmp_path / "absent.sock")
    loaded = modules_after(module, [socket if arg == "{socket}" else arg for arg in argv])
    assert "grpclib.client" in loaded, "the command did not get as far as calling the server"
    assert not loaded & set(NOT_FOR_ADMIN_VERBS), sorted(loaded & set(NOT_FOR_ADMIN_VERBS))


def test_validate_still_loads_what_it_checks(tmp_path: Path) -> None:
    config = tmp_path / "server.conf"
    config.write_text('server { trust_domain = "example.org" }\n')
    loaded = modules_after("pyspire.server.cli", ["validate", "-config", str(config)])
    assert {"pyspire.config.daemon_config", "pyspire.config.plugins"} <= loaded
