"""``validate`` refuses what ``run`` refuses before starting, with the same message, and touches nothing.

Each case is one config mistake. ``pyspire-server``/``pyspire-agent`` ``run`` and ``validate``
are started on it as real processes: both must exit 1 naming the mistake. A valid config
validates without creating a file, and ``validate`` prints the warnings ``run`` logs.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine

from tests.datastore.test_foreign_databases import populate_spire
from tests.support.daemons import console_script
from tests.support.pki import make_ca


@dataclass(frozen=True)
class Case:
    """One mistake: what to change in a valid config, and the words both commands must say."""

    id: str
    daemon: str
    message: str
    section_extra: str = ""
    plugins: str = ""
    top: str = ""
    drop: str = ""


def _sqlite_spire(directory: Path) -> Path:
    path = directory / "spire.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    populate_spire(engine)
    engine.dispose()
    return path


SERVER_CASES = [
    Case("unknown-key", "server", 'server: key "bind_prot": unknown key', section_extra="bind_prot = 1"),
    Case("unquoted-word", "server", 'key "log_level": debug at line', section_extra="log_level = debug"),
    Case(
        "wrong-plugin-type",
        "server",
        'NodeAttestor "sql"',
        plugins='NodeAttestor "sql" {\n plugin_data {}\n }',
    ),
    Case(
        "not-installed",
        "server",
        'no NodeAttestor plugin named "nope" is installed',
        plugins='NodeAttestor "nope" {\n plugin_data {}\n }',
    ),
    Case(
        "bad-plugin-data",
        "server",
        'NodeAttestor "join_token": plugin_data: key "ttl": unknown key',
        drop="join_token",
        plugins='NodeAttestor "join_token" {\n plugin_data { ttl = 1 }\n }',
    ),
    Case(
        "x509pop-without-ca",
        "server",
        'NodeAttestor "x509pop": plugin_data: key "ca_bundle_path": one of ca_bundle_path or ca_bundle_paths',
        plugins='NodeAttestor "x509pop" {\n plugin_data {}\n }',
    ),
    Case(
        "upstream-missing-files",
        "server",
        'UpstreamAuthority "disk": plugin_data: key "cert_file_path"',
        plugins='UpstreamAuthority "disk" {\n plugin_data {\n cert_file_path = "/nonexistent/ca.pem"\n'
        ' key_file_path = "/nonexistent/ca.key"\n }\n }',
    ),
    Case(
        "two-key-managers",
        "server",
        "the server needs exactly 1 KeyManager plugin; declared:",
        plugins='KeyManager "memory" {\n plugin_data {}\n }',
    ),
    Case(
        "spire-database",
        "server",
        "the database was created by SPIRE",
        drop="sql",
        plugins='DataStore "sql" {\n plugin_data {\n database_type = "sqlite3"\n'
        ' connection_string = "{spire_db}"\n }\n }',
    ),
    Case(
        "corrupt-key-file",
        "server",
        'KeyManager "disk": plugin_data: key "keys_path": cannot load keys from',
        drop="disk",
        plugins='KeyManager "disk" {\n plugin_data { keys_path = "{garbage}" }\n }',
    ),
    Case("m3", "server", 'key "telemetry.M3"', top='telemetry {\n M3 = [{ address = "x:1", env = "e" }]\n}'),
    Case(
        "named-pipe",
        "server",
        "named_pipe_name is not supported in this platform",
        section_extra='experimental { named_pipe_name = "\\\\p" }',
    ),
]

AGENT_CASES = [
    Case(
        "no-bootstrap",
        "agent",
        "the agent needs trust_bundle_path or trust_bundle_url",
        drop="trust_bundle_path",
    ),
    Case(
        "admin-socket-is-workload-socket",
        "agent",
        "admin_socket_path must differ from socket_path",
        section_extra='admin_socket_path = "{socket}"',
    ),
    Case("missing-trust-bundle", "agent", "cannot read trust_bundle_path", drop="bundle-file"),
    Case("unreadable-trust-bundle", "agent", "cannot be read", drop="bundle-garbage"),
    Case(
        "wrong-plugin-type",
        "agent",
        'WorkloadAttestor "join_token"',
        plugins='WorkloadAttestor "join_token" {\n plugin_data {}\n }',
    ),
    Case("unknown-key", "agent", 'agent: key "sever_port": unknown key', section_extra="sever_port = 1"),
    Case(
        "admin-named-pipe",
        "agent",
        "admin_named_pipe_name is not supported in this platform",
        section_extra='experimental { admin_named_pipe_name = "\\\\p" }',
    ),
]


def _server_text(directory: Path, case: Case | None) -> str:
    case = case or Case("valid", "server", "")
    datastore = (
        ""
        if case.drop == "sql"
        else f'DataStore "sql" {{\n plugin_data {{\n database_type = "sqlite3"\n'
        f' connection_string = "{directory / "data" / "datastore.sqlite3"}"\n }}\n }}'
    )
    key_manager = (
        ""
        if case.drop == "disk"
        else f'KeyManager "disk" {{\n plugin_data {{ keys_path = "{directory / "data" / "keys.json"}" }}\n }}'
    )
    join_token = "" if case.drop == "join_token" else 'NodeAttestor "join_token" {\n plugin_data {}\n }'
    return f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "1"
    socket_path = "{directory / "sock" / "api.sock"}"
    trust_domain = "example.org"
    data_dir = "{directory / "data"}"
    {case.section_extra}
}}
plugins {{
    {datastore}
    {key_manager}
    {join_token}
    {case.plugins}
}}
{case.top}
"""


def _agent_text(directory: Path, case: Case | None) -> str:
    case = case or Case("valid", "agent", "")
    bundle = directory / "bootstrap.pem"
    if case.drop == "bundle-file":
        bundle = directory / "missing.pem"
    elif case.drop == "bundle-garbage":
        bundle.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    else:
        bundle.write_bytes(make_ca().certificate.public_bytes(serialization.Encoding.PEM))
    bootstrap = "" if case.drop == "trust_bundle_path" else f'trust_bundle_path = "{bundle}"'
    return f"""
agent {{
    trust_domain = "example.org"
    server_address = "127.0.0.1"
    server_port = "1"
    socket_path = "{directory / "public" / "api.sock"}"
    data_dir = "{directory / "data"}"
    join_token = "unused"
    {bootstrap}
    {case.section_extra}
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{ directory = "{directory / "data"}" }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
    {case.plugins}
}}
{case.top}
"""


def _write_config(directory: Path, case: Case | None, daemon: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = _server_text(directory, case) if daemon == "server" else _agent_text(directory, case)
    if "{spire_db}" in text:
        text = text.replace("{spire_db}", str(_sqlite_spire(directory)))
    if "{garbage}" in text:
        garbage = directory / "keys.json"
        garbage.write_text("{ this is not a key file")
        text = text.replace("{garbage}", str(garbage))
    text = text.replace("{socket}", str(directory / "public" / "api.sock"))
    path = directory / f"{daemon}.conf"
    path.write_text(text)
    return path


def _command(daemon: str, verb: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(f"pyspire-{daemon}"), verb, "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=config.parent,
        check=False,
    )


@pytest.mark.parametrize("case", SERVER_CASES + AGENT_CASES, ids=lambda case: f"{case.daemon}-{case.id}")
def test_validate_refuses_what_run_refuses_with_the_same_words(case: Case, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "run", case, case.daemon)
    checked = _write_config(tmp_path / "validate", case, case.daemon)
    with ThreadPoolExecutor(2) as pool:
        ran = pool.submit(_command, case.daemon, "run", config)
        validated = pool.submit(_command, case.daemon, "validate", checked)
    run, validate = ran.result(), validated.result()
    run_output = run.stdout + run.stderr
    assert run.returncode == 1, run_output
    assert case.message in run_output, run_output
    assert validate.returncode == 1, validate.stdout + validate.stderr
    assert case.message in validate.stderr, validate.stderr
    assert "Traceback" not in run_output + validate.stderr


@pytest.mark.parametrize("daemon", ["server", "agent"])
def test_a_valid_config_validates_without_creating_anything(daemon: str, tmp_path: Path) -> None:
    config = _write_config(tmp_path, None, daemon)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _command(daemon, "validate", config)
    assert result.returncode == 0, result.stderr
    assert f"SPIRE {daemon} configuration file is valid." in result.stdout
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_validate_prints_the_warnings_run_logs(tmp_path: Path) -> None:
    extra = 'default_x509_svid_ttl = "12h"\n    experimental { event_timeout = "1m" }'
    case = Case("warnings", "server", "", section_extra=extra, plugins='NodeAttestor "sql" {\n plugin_data {}\n }')
    config = _write_config(tmp_path, case, "server")
    run = _command("server", "run", config)
    validate = _command("server", "validate", config)

    def warnings(text: str) -> list[str]:
        return re.findall(r'level=warn msg="((?:[^"\\]|\\.)*)"', text)

    expected = warnings(run.stdout + run.stderr)
    assert len(expected) == 2, run.stdout + run.stderr
    assert any("is more than a sixth of" in w for w in expected)
    assert warnings(validate.stderr) == expected
