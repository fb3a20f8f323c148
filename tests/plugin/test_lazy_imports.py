"""Only what the config names is imported: a real daemon's ``sys.modules``.

An agent attesting with aws_iid must not import boto3, nor one attesting with k8s_psat the
Kubernetes client: those are the server halves' clients (about 0.6 s and 1.4 s of start-up).
Each daemon here is the installed console script; a ``sitecustomize`` module on its
``PYTHONPATH`` writes the names in ``sys.modules`` to a file when the process exits, and the
process is stopped (SIGTERM, a clean exit) once its plugins are loaded.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemons import console_script
from tests.support.free_port import free_port

PLUGIN_PACKAGES = (
    "pyspire_aws_iid",
    "pyspire_gcp_iit",
    "pyspire_k8s_psat",
    "pyspire_vault_upstream",
    "pyspire_vault_keymanager",
    "pyspire_aws_kms",
    "pyspire_awssecret",
    "pyspire_azure_imds",
    "pyspire_azure_msi",
)
SERVER_CLIENTS = ("boto3", "botocore", "kubernetes", "google.auth", "requests", "hvac", "azure")


SITECUSTOMIZE = """
import atexit, os, sys

def _dump():
    with open(os.environ["MODULES_FILE"] + "." + str(os.getpid()), "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(_dump)
"""


def imported_modules(role: str, directory: Path, config: str, plugins: int) -> set[str]:
    """Every module in a real ``pyspire-<role> run``'s ``sys.modules`` once ``plugins`` plugins are loaded."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "site").mkdir()
    (directory / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = directory / f"{role}.conf"
    path.write_text(config)
    log = directory / "daemon.log"
    dumps = directory / "modules"
    with (directory / "output").open("wb") as output:
        process = subprocess.Popen(
            [console_script(f"pyspire-{role}"), "run", "-config", str(path)],
            cwd=directory,
            stdout=output,
            stderr=output,
            env={**os.environ, "PYTHONPATH": str(directory / "site"), "MODULES_FILE": str(dumps)},
        )
    try:
        deadline = time.monotonic() + 60
        while not log.exists() or log.read_text().count('msg="Plugin loaded"') < plugins:
            assert process.poll() is None, f"{role} exited early:\n{(directory / 'output').read_text()}"
            assert time.monotonic() < deadline, (
                f"{role} did not load its plugins:\n{(directory / 'output').read_text()}"
            )
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(20)
    # The daemon's own process, not the helper processes it may start.
    modules = directory / f"modules.{process.pid}"
    assert modules.exists(), (
        f"{role} did not exit cleanly (exit status {process.returncode}):\n"
        f"{(directory / 'output').read_text()}\n{log.read_text()}"
    )
    return set(modules.read_text().split())


def agent_config(directory: Path, attestor: str, plugin_data: str) -> str:
    return f"""
agent {{
    data_dir = "{directory / "data"}"
    log_file = "{directory / "daemon.log"}"
    server_address = "127.0.0.1"
    server_port = "{free_port()}"
    socket_path = "{directory / "api.sock"}"
    trust_domain = "example.org"
    insecure_bootstrap = true
}}
plugins {{
    KeyManager "memory" {{ plugin_data {{}} }}
    WorkloadAttestor "unix" {{ plugin_data {{}} }}
    NodeAttestor "{attestor}" {{ plugin_data {{ {plugin_data} }} }}
}}
"""


def server_config(directory: Path, attestor: str, plugin_data: str) -> str:
    return f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{free_port()}"
    socket_path = "{directory / "api.sock"}"
    trust_domain = "example.org"
    data_dir = "{directory / "data"}"
    log_file = "{directory / "daemon.log"}"
}}
plugins {{
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" connection_string = "{directory / "ds.sqlite3"}" }} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    NodeAttestor "{attestor}" {{ plugin_data {{ {plugin_data} }} }}
}}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attestor", "package", "plugin_data"),
    [
        ("aws_iid", "pyspire_aws_iid", 'ec2_metadata_endpoint = "http://127.0.0.1:{port}"'),
        ("k8s_psat", "pyspire_k8s_psat", 'cluster = "c1"'),
        ("gcp_iit", "pyspire_gcp_iit", 'identity_token_host = "127.0.0.1:{port}"'),
        ("azure_imds", "pyspire_azure_imds", 'tenant_domain = "example.com" imds_host = "127.0.0.1:{port}"'),
        ("azure_msi", "pyspire_azure_msi", 'imds_host = "127.0.0.1:{port}"'),
    ],
)
def test_an_agent_imports_its_node_attestors_agent_half_only(
    tmp_path: Path, attestor: str, package: str, plugin_data: str
) -> None:
    # A closed port: the agent half must not reach a real metadata service while it is watched.
    plugin_data = plugin_data.replace("{port}", str(free_port()))
    modules = imported_modules("agent", tmp_path, agent_config(tmp_path, attestor, plugin_data), plugins=3)
    assert f"{package}.agent" in modules  # the observation works: the agent half was imported
    assert f"{package}.server" not in modules
    assert not [client for client in SERVER_CLIENTS if client in modules]
    assert {name for name in modules if name in PLUGIN_PACKAGES} == {package}
    assert "pyspire_unix_workload" in modules


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attestor", "package", "plugin_data", "client"),
    [
        ("aws_iid", "pyspire_aws_iid", "", "boto3"),
        ("k8s_psat", "pyspire_k8s_psat", "", "kubernetes"),
    ],
)
def test_a_server_imports_its_node_attestors_server_half_only(
    tmp_path: Path, attestor: str, package: str, plugin_data: str, client: str
) -> None:
    modules = imported_modules("server", tmp_path, server_config(tmp_path, attestor, plugin_data), plugins=3)
    assert f"{package}.server" in modules
    assert client in modules
    assert f"{package}.agent" not in modules
    assert f"{package}.workload" not in modules
    assert {name for name in modules if name in PLUGIN_PACKAGES} == {package}
    assert "pyspire_unix_workload" not in modules


def test_an_admin_command_of_the_server_imports_no_sql_machinery(tmp_path: Path) -> None:
    """``bundle show``, ``entry create``, ``token generate`` only talk to the admin socket: they must
    not pay for SQLAlchemy and Alembic (half a second each), which only ``migrate-from-spire`` needs."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    result = subprocess.run(
        [console_script("pyspire-server"), "bundle", "show", "-socketPath", str(tmp_path / "nobody.sock")],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site"), "MODULES_FILE": str(tmp_path / "modules")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # nobody listens on that socket
    (dump,) = tmp_path.glob("modules.*")
    modules = set(dump.read_text().split())
    assert "pyspire.server.cli.migrate" in modules  # the observation works: every verb is registered
    assert not [name for name in modules if name.split(".")[0] in ("sqlalchemy", "alembic")]
