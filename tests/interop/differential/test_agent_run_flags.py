"""The agent's ``run``/``validate`` flags of SPIRE v1.13.3: both agents judge the same command lines.

Each case runs ``spire-agent validate`` and ``pyspire-agent validate`` on one config file with
the same flags (``validate`` loads the config exactly as ``run`` does, flags merged over the
file). The exit codes must be equal. Where pyspire refuses what SPIRE accepts, the case says
so and pyspire's message must name the key (docs/compatibility.md gives the reason). A run
then shows the flags honoured: both agents reach the server only through ``-serverPort`` and
attest only with the token of ``-joinTokenFile``.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.daemons import AgentDaemon, agent_config, console_script, start_server
from tests.support.pki import make_ca

SAME = [
    "",
    "-insecureBootstrap",
    "-trustBundle '' -insecureBootstrap",
    "-joinToken abc",
    "-joinTokenFile {files}/token",
    "-joinTokenFile {files}/missing",
    "-joinToken abc -joinTokenFile {files}/token",
    "-trustBundleFormat pem",
    "-trustBundleFormat bogus",
    "-rebootstrapMode never",
    "-rebootstrapMode sometimes",
    "-rebootstrapDelay 5m",
    "-retryBootstrap",
    "-retryBootstrap=true",
    "-retryBootstrap=maybe",
    "-logSourceLocation",
    "-allowUnauthenticatedVerifiers",
    "-allowUnauthenticatedVerifiers=false",
    "-serverPort 0",
    "-serverPort abc",
    "-serverAddress ''",
    "-trustBundleUrl https://127.0.0.1:1/bundle",
    "--insecureBootstrap",
    "-logLevel bogus",
]
REFUSED_BY_PYSPIRE = {
    "-rebootstrapMode always": "rebootstrap_mode",
    "-rebootstrapMode auto": "rebootstrap_mode",
    "-retryBootstrap=false": "retry_bootstrap",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("agent-flags")
    (directory / "ca.pem").write_bytes(make_ca().certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "token").write_text("a-join-token\n")
    (directory / "agent.conf").write_text(f"""
agent {{
    trust_domain = "example.org"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path = "{directory / "public" / "api.sock"}"
    trust_bundle_path = "{directory / "ca.pem"}"
    data_dir = "{directory / "data"}"
}}
plugins {{
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
""")
    return directory


def _validate(program: str, flags: str, files: Path) -> subprocess.CompletedProcess[str]:
    argv = [arg.replace("{files}", str(files)) for arg in shlex.split(flags)]
    return subprocess.run(
        [program, "validate", "-config", str(files / "agent.conf"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("flags", SAME)
def test_validate_with_flags_judges_as_spire_agent_does(flags: str, files: Path, spire_agent_bin: Path) -> None:
    spire = _validate(str(spire_agent_bin), flags, files)
    pyspire = _validate(console_script("pyspire-agent"), flags, files)
    assert pyspire.returncode == spire.returncode, (spire.stdout + spire.stderr, pyspire.stdout + pyspire.stderr)


@pytest.mark.parametrize(("flags", "key"), REFUSED_BY_PYSPIRE.items())
def test_a_flag_pyspire_cannot_honour_is_refused_by_its_key(
    flags: str, key: str, files: Path, spire_agent_bin: Path
) -> None:
    assert _validate(str(spire_agent_bin), flags, files).returncode == 0
    refused = _validate(console_script("pyspire-agent"), flags, files)
    assert refused.returncode == 1
    assert f'key "agent.{key}"' in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_run_honours_server_port_and_join_token_file_over_the_file(tmp_path: Path, spire_agent_bin: Path) -> None:
    server = start_server(tmp_path / "server", log_level="WARN")
    agents: list[AgentDaemon] = []
    try:
        for name, executable in (("spire", str(spire_agent_bin)), ("pyspire", None)):
            token = server.join_token()
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(token + "\n")
            text, socket_path = agent_config(tmp_path / name, server, log_level="WARN")
            text = text.replace(f'server_port = "{server.port}"', 'server_port = "1"')
            command = Path(executable).name if executable else "pyspire-agent"
            flags = ["-serverPort", str(server.port), "-joinTokenFile", str(token_file)]
            agent = AgentDaemon(command, tmp_path / name, socket_path, text, flags, executable=executable)
            agents.append(agent.start())
            agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
            assert f"SPIFFE ID         : {agent_id}" in server.cli("agent", "show", "-spiffeID", agent_id).stdout
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
