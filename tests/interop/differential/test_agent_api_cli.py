"""``spire-agent api ...`` and ``pyspire-agent api ...``: both command lines at the same agent.

A pyspire-agent and a spire-agent (v1.13.3) attest to one pyspire-server; this process is
registered under each. Every command line is run by both programs against the pyspire-agent,
and some also against the spire-agent: the exit codes and stdout (pretty text and ``-output json``) must be
equal. Both ask the same agent, which hands both the same cached SVIDs, so only the time
a fetch took (``Received 1 svid after 5.2ms``) and the ``-write`` directory are replaced;
the claims of ``validate jwt`` are compared as JSON (Go's protojson spaces them at random).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, console_script, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

WORKLOAD = "spiffe://example.org/cli-workload"
COMMANDS = [
    "api fetch x509",
    "api fetch",
    "api fetch x509 -output json",
    "api fetch -output json",
    "api fetch x509 -silent",
    "api fetch x509 -write {dir}",
    "api fetch x509 -silent -write {dir}",
    "api fetch x509 -timeout 5s",
    "api fetch jwt -audience a",
    "api fetch jwt -audience a,b -output json",
    "api fetch jwt -audience x -audience a",
    "api fetch jwt -audience a -format json",
    f"api fetch jwt -audience a -spiffeID {WORKLOAD}",
    "api fetch jwt -audience a -spiffeID spiffe://example.org/not-mine",
    "api fetch jwt",
    "api validate jwt -audience a -svid {jwt}",
    "api validate jwt -audience a -svid {jwt} -output json",
    "api validate jwt -audience b -svid {jwt}",
    "api validate jwt -audience a -svid not-a-token",
    "api validate jwt -audience a",
    "api validate jwt -svid {jwt}",
    "api fetch x509 -socketPath {dir}/no.sock",
]
ON_SPIRE_AGENT = [
    "api fetch x509",
    "api fetch x509 -output json",
    "api fetch jwt -audience a,b -output json",
    "api validate jwt -audience a -svid {jwt}",
    "api validate jwt -audience b -svid {jwt}",
]
"""Also against spire-agent: the pyspire CLI reads SPIRE's agent as SPIRE's CLI does."""
_ELAPSED = re.compile(r"(Received \d+ svids? after )\S+")


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory, spire_agent_bin: Path) -> Iterator[dict[str, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("agent-api-cli")
    server = start_server(directory / "server", log_level="WARN")
    started: dict[str, AgentDaemon] = {}
    try:
        for name, executable in (("pyspire-agent", None), ("spire-agent", spire_agent_bin)):
            alias = f"spiffe://example.org/node/{name}"
            agent = start_agent(
                directory / name, server, server.join_token(alias), executable=executable, log_level="WARN"
            )
            started[name] = agent
            register_this_process(server, alias, WORKLOAD)
            assert fetched_spiffe_id(agent) == WORKLOAD
        yield started
    finally:
        for agent in started.values():
            agent.stop()
        server.stop()


def _token(agent: AgentDaemon) -> str:
    fetched = agent.cli("api", "fetch", "jwt", "-audience", "a", "-output", "json").stdout
    token: str = json.loads(fetched)[0]["svids"][0]["svid"]
    return token


def _answer(program: str, command: str, agent: AgentDaemon, directory: Path) -> tuple[int, str]:
    directory.mkdir(parents=True, exist_ok=True)  # SPIRE's -write does not make it
    command = command.replace("{dir}", str(directory))
    if "{jwt}" in command:
        command = command.replace("{jwt}", _token(agent))
    argv = [program, *shlex.split(command)]
    if "-socketPath" not in argv:
        argv += ["-socketPath", str(agent.socket_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    text = _ELAPSED.sub(r"\1<elapsed>", result.stdout.replace(str(directory), "<dir>"))
    if command.startswith("api validate jwt") and "Claims    : " in text:
        head, claims = text.split("Claims    : ", 1)
        text = head + json.dumps(json.loads(claims), sort_keys=True)
    return result.returncode, text


@pytest.mark.parametrize(
    ("command", "agent_name"),
    [(command, "pyspire-agent") for command in COMMANDS] + [(command, "spire-agent") for command in ON_SPIRE_AGENT],
)
def test_the_agent_cli_answers_as_spire_agents_does(
    command: str, agent_name: str, agents: dict[str, AgentDaemon], spire_agent_bin: Path, tmp_path: Path
) -> None:
    agent = agents[agent_name]
    spire = _answer(str(spire_agent_bin), command, agent, tmp_path / "spire")
    pyspire = _answer(console_script("pyspire-agent"), command, agent, tmp_path / "pyspire")
    assert pyspire == spire


def _watch_first_update(program: str, agent: AgentDaemon) -> str:
    """What ``api watch`` prints for its first update (the block ends with an empty line), then stopped."""
    watcher = subprocess.Popen(
        [program, "api", "watch", "-socketPath", str(agent.socket_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1] == "\n" and any(line.startswith("SPIFFE ID:") for line in lines)):
            line = watcher.stdout.readline()
            assert line, f"{program} ended: {watcher.stderr.read() if watcher.stderr else ''}"
            lines.append(line)
        assert watcher.poll() is None, "the watch ended after its first update"
        return _ELAPSED.sub(r"\1<elapsed>", "".join(lines))
    finally:
        watcher.kill()
        watcher.wait()


@pytest.mark.parametrize("agent_name", ["pyspire-agent", "spire-agent"])
def test_api_watch_prints_the_first_update_as_spire_agents_does(
    agent_name: str, agents: dict[str, AgentDaemon], spire_agent_bin: Path
) -> None:
    agent = agents[agent_name]
    spire = _watch_first_update(str(spire_agent_bin), agent)
    assert spire.startswith("Received 1 svid after <elapsed>\n\nSPIFFE ID:\t\t" + WORKLOAD)
    assert _watch_first_update(console_script("pyspire-agent"), agent) == spire


def test_api_watch_without_an_agent_retries_and_says_why_as_spire_agents_does(
    spire_agent_bin: Path, tmp_path: Path
) -> None:
    said = {}
    for program in (str(spire_agent_bin), console_script("pyspire-agent")):
        watcher = subprocess.Popen(
            [program, "api", "watch", "-socketPath", str(tmp_path / "no.sock")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stderr is not None
            first, second = watcher.stderr.readline(), watcher.stderr.readline()  # tried again after 1 s
            assert watcher.poll() is None, "the watch gave up"
            said[program] = (first, second)
        finally:
            watcher.kill()
            watcher.wait()
    spire, pyspire = said.values()
    assert spire[0].startswith("rpc error: code = Unavailable desc = connection error")
    assert pyspire == spire
