"""Both real command lines over many bad invocations: a message naming the problem, never a traceback.

Each case runs ``pyspire-server`` or ``pyspire-agent`` as a process and checks the exit code
(SPIRE's: 1 for any error, a bad flag included; 127 for a missing or unknown command), that
stderr names what is wrong (the flag, the file, the socket), and that no Python traceback is
printed. Cases marked ``live`` talk to a running server and agent, so that a local failure
(an unwritable ``-write`` directory) is shown not to be reported as an unreachable daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, ServerDaemon, console_script, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

ENTRY = ["-spiffeID", "spiffe://example.org/a", "-parentID", "spiffe://example.org/b", "-selector", "unix:uid:1"]
HUGE = "99999999999999999999"


@dataclass(frozen=True)
class Case:
    """One invocation: ``{files}`` in an argument is the directory of the test's files."""

    command: str
    argv: tuple[str, ...]
    message: str
    code: int = 1
    stdin: bytes | None = None
    live: bool = False


def _server(*argv: str, message: str, **kwargs: object) -> Case:
    return Case("pyspire-server", argv, message, **kwargs)  # type: ignore[arg-type]


def _agent(*argv: str, message: str, **kwargs: object) -> Case:
    return Case("pyspire-agent", argv, message, **kwargs)  # type: ignore[arg-type]


CASES = {
    # Integers that do not fit the API's fields.
    "token ttl too large": _server("token", "generate", "-ttl", HUGE, message=f'-ttl: invalid value "{HUGE}": out'),
    "token ttl above int32": _server("token", "generate", "-ttl", "3000000000", message="-ttl: invalid value"),
    "token ttl not a number": _server("token", "generate", "-ttl", "ten", message='"ten": not an integer'),
    "entry x509 ttl": _server("entry", "create", *ENTRY, "-x509SVIDTTL", HUGE, message="-x509SVIDTTL: invalid value"),
    "entry jwt ttl": _server("entry", "create", *ENTRY, "-jwtSVIDTTL", "99999999999", message="-jwtSVIDTTL: invalid"),
    "entry expiry": _server("entry", "create", *ENTRY, "-entryExpiry", HUGE, message="-entryExpiry: invalid value"),
    "entry update ttl": _server(
        "entry", "update", "-entryID", "e", *ENTRY, "-x509SVIDTTL", HUGE, message="-x509SVIDTTL: invalid value"
    ),
    "purge age": _server("agent", "purge", "-expiredFor", f"{HUGE}h", message="-expiredFor: invalid duration"),
    "x509 mint ttl": _server(
        "x509", "mint", "-spiffeID", "spiffe://example.org/a", "-ttl", HUGE, message="-ttl: ", live=False
    ),
    "x509 mint ttl hours": _server(
        "x509", "mint", "-spiffeID", "spiffe://example.org/a", "-ttl", "999999999h", message="-ttl: "
    ),
    "jwt mint ttl": _server(
        "jwt", "mint", "-spiffeID", "spiffe://example.org/a", "-audience", "a", "-ttl", HUGE, message="-ttl: "
    ),
    "data ttl": _server(
        "entry",
        "create",
        "-data",
        "-",
        message="-data: entry 0 is malformed",
        stdin=json.dumps(
            {
                "entries": [
                    {
                        "spiffe_id": "spiffe://example.org/a",
                        "parent_id": "spiffe://example.org/b",
                        "x509_svid_ttl": 2**40,
                    }
                ]
            }
        ).encode(),
    ),
    # Local files: named by flag and path, never "cannot reach the server".
    "delete file not JSON": _server("entry", "delete", "-file", "{files}/not.json", message="-file: not valid JSON"),
    "delete file missing": _server("entry", "delete", "-file", "{files}/missing", message="-file: cannot read"),
    "delete file not text": _server("entry", "delete", "-file", "{files}/binary", message="-file: {files}/binary is"),
    "delete stdin not ids": _server("entry", "delete", "-file", "-", message='{"ids"', stdin=b"[1, 2]"),
    "data missing": _server("entry", "create", "-data", "{files}/missing", message="-data: cannot read"),
    "data not text": _server("entry", "create", "-data", "{files}/binary", message="not UTF-8 text"),
    "data stdin not JSON": _server("entry", "create", "-data", "-", message="-data: not valid JSON", stdin=b"{"),
    "bundle path missing": _server(
        "bundle", "set", "-id", "spiffe://other.org", "-path", "{files}/missing", message="-path: cannot read"
    ),
    "federation bundle missing": _server(
        "federation",
        "create",
        "-trustDomain",
        "other.org",
        "-bundleEndpointURL",
        "https://127.0.0.1:1",
        "-bundleEndpointProfile",
        "https_spiffe",
        "-endpointSpiffeID",
        "spiffe://other.org/server",
        "-trustDomainBundlePath",
        "{files}/missing",
        message="-trustDomainBundlePath: cannot read",
    ),
    "x509 mint write": _server(
        "x509",
        "mint",
        "-spiffeID",
        "spiffe://example.org/minted",
        "-write",
        "{files}/a-file/out",
        message="-write: cannot write {files}/a-file/out",
        live=True,
    ),
    "jwt mint write": _server(
        "jwt",
        "mint",
        "-spiffeID",
        "spiffe://example.org/minted",
        "-audience",
        "a",
        "-write",
        "{files}/a-file/t",
        message="-write: cannot write {files}/a-file/t",
        live=True,
    ),
    "federation data unknown key": _server(
        "federation",
        "create",
        "-data",
        "-",
        message='-data: relationship 0: unknown key "bundleEndpoint"',
        stdin=b'{"federationRelationships": [{"trustDomain": "a.org", "bundleEndpoint": "https://a.org"}]}',
    ),
    "federation data not a string": _server(
        "federation",
        "update",
        "-data",
        "-",
        message='-data: relationship 0: "trustDomain" must be a string',
        stdin=b'{"federationRelationships": [{"trustDomain": 7}]}',
    ),
    "federation data pem not a string": _server(
        "federation",
        "create",
        "-data",
        "-",
        message="trustDomainBundle in the pem format must be a string",
        stdin=json.dumps(
            {
                "federationRelationships": [
                    {
                        "trustDomain": "a.org",
                        "bundleEndpointURL": "https://a.org",
                        "bundleEndpointProfile": "https_web",
                        "trustDomainBundleFormat": "pem",
                        "trustDomainBundle": {"keys": []},
                    }
                ]
            }
        ).encode(),
    ),
    "federation data bad bundle": _server(
        "federation",
        "create",
        "-data",
        "-",
        message="-data: relationship 0 trustDomainBundle: cannot read the bundle",
        stdin=json.dumps(
            {
                "federationRelationships": [
                    {
                        "trustDomain": "a.org",
                        "bundleEndpointURL": "https://a.org",
                        "bundleEndpointProfile": "https_web",
                        "trustDomainBundleFormat": "spiffe",
                        "trustDomainBundle": {"nokeys": []},
                    }
                ]
            }
        ).encode(),
    ),
    "federation data not a list": _server(
        "federation",
        "create",
        "-data",
        "-",
        message="federationRelationships must be a list",
        stdin=b'{"federationRelationships": 1}',
    ),
    "federation data and flags": _server(
        "federation",
        "create",
        "-data",
        "-",
        "-bundleEndpointProfile",
        "https_web",
        message="cannot use other flags to specify relationship fields when 'data' flag is set",
        stdin=b"{}",
    ),
    "federation profile missing": _server(
        "federation",
        "create",
        "-trustDomain",
        "a.org",
        "-bundleEndpointURL",
        "https://a.org",
        message='unknown bundle endpoint profile type: ""',
    ),
    # Flags and commands.
    "non-UTF-8 argument": _server("entry", "create", *ENTRY, "-hint", "\udcff", message="is not valid UTF-8"),
    "non-ASCII DNS name": _server(
        "x509", "mint", "-spiffeID", "spiffe://example.org/a", "-dns", "é.example", message='-dns "é.example"'
    ),
    "unknown flag": _server("entry", "show", "-bogus", message="unrecognized arguments: -bogus"),
    "bad choice": _server("entry", "show", "-output", "yaml", message="-output: invalid choice"),
    "unknown command": _server("bogus", message="invalid choice: 'bogus'", code=127),
    "no command": _server(message="required: <command>", code=127),
    "group without verb": _server("entry", message="required: <verb>"),
    # The server: unreachable, or refusing.
    "no server": _server("entry", "show", "-socketPath", "{files}/none.sock", message="cannot reach the server at"),
    "refused": _server("entry", "show", "-entryID", "nope", message="rpc error: code = NotFound", live=True),
    "logger level unknown": _server("logger", "set", "-level", "loud", message='the value "loud" is not a valid'),
    "logger level missing": _server("logger", "set", message="a value (-level) must be set"),
    "logger no server": _server("logger", "get", message="cannot reach the server at {files}/absent.sock"),
    # The agent's command line.
    "timeout nan": _agent("api", "fetch", "x509", "-timeout", "nan", message='-timeout: invalid value "nan"'),
    "timeout negative": _agent("api", "fetch", "x509", "-timeout", "-1", message="-timeout: invalid value"),
    "timeout words": _agent("api", "fetch", "x509", "-timeout", "soon", message='invalid duration "soon"'),
    "no agent": _agent(
        "api", "fetch", "x509", "-socketPath", "{files}/none.sock", message="cannot reach the agent at {files}/none"
    ),
    "jwt without audience": _agent("api", "fetch", "jwt", message="audience must be specified"),
    "validate without audience": _agent("api", "validate", "jwt", message="audience must be specified"),
    "validate without svid": _agent("api", "validate", "jwt", "-audience", "a", message="svid must be specified"),
    "agent unknown command": _agent("bogus", message="invalid choice: 'bogus'", code=127),
    "agent group without verb": _agent("api", message="required: <command>"),
    "agent config missing": _agent("validate", "-config", "{files}/missing", message="cannot read the config file"),
    "agent config not text": _agent("run", "-config", "{files}/binary", message="not UTF-8 text"),
    "fetch write": _agent(
        "api",
        "fetch",
        "x509",
        "-write",
        "{files}/a-file/out",
        message="-write: cannot write {files}/a-file/out",
        live=True,
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-files")
    (directory / "not.json").write_text("this is not JSON\n")
    (directory / "binary").write_bytes(b"\xff\xfe\x00{")
    (directory / "a-file").write_text("a file, so nothing can be written below it\n")
    return directory


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("cli-live")
    server = start_server(directory / "server")
    alias = "spiffe://example.org/node/cli"
    agent = start_agent(directory / "agent", server, server.join_token(alias))
    register_this_process(server, alias, "spiffe://example.org/cli-workload")
    fetched_spiffe_id(agent)
    yield server, agent
    agent.stop()
    server.stop()


def _run(case: Case, files: Path, socket: Path | None) -> subprocess.CompletedProcess[bytes]:
    argv = [arg.replace("{files}", str(files)) for arg in case.argv]
    if socket is not None and "-socketPath" not in argv and len(argv) > 1:
        argv += ["-socketPath", str(socket)]
    return subprocess.run(
        [console_script(case.command), *(os.fsencode(arg) for arg in argv)],
        input=case.stdin or b"",
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_invocation_names_the_problem_without_a_traceback(
    case: Case, files: Path, request: pytest.FixtureRequest
) -> None:
    socket = None
    if case.live:
        server, agent = request.getfixturevalue("live")
        socket = server.socket_path if case.command == "pyspire-server" else agent.socket_path
    result = _run(case, files, socket if case.live else files / "absent.sock")
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert result.returncode == case.code, stderr
    assert "Error: " in stderr
    assert case.message.replace("{files}", str(files)) in stderr
    if case.live or "cannot reach" not in case.message:
        assert "cannot reach" not in stderr


def test_entry_delete_reads_the_ids_from_stdin(live: tuple[ServerDaemon, AgentDaemon]) -> None:
    server, _ = live
    created = server.cli(
        "entry", "create", "-parentID", "spiffe://example.org/node/cli", "-spiffeID", "spiffe://example.org/gone",
        "-selector", "unix:uid:424242",
    ).stdout  # fmt: skip
    entry_id = created.split("Entry ID         : ", 1)[1].split()[0]
    deleted = server.cli("entry", "delete", "-file", "-", stdin=json.dumps({"ids": [entry_id]}).encode())
    assert f"Deleted entry with ID: {entry_id}" in deleted.stdout
    assert "spiffe://example.org/gone" not in server.cli("entry", "show").stdout


@pytest.mark.parametrize("command", ["server", "agent"])
def test_output_cut_short_by_a_closed_pipe_ends_quietly(command: str, live: tuple[ServerDaemon, AgentDaemon]) -> None:
    """``... | head -1``: the command dies by SIGPIPE, as SPIRE's Go binaries do, and says nothing more."""
    server, agent = live
    if command == "server":
        entries = [
            {
                "spiffe_id": f"spiffe://example.org/pipe/{number}",
                "parent_id": "spiffe://example.org/node/cli",
                "selectors": [{"type": "unix", "value": f"uid:{100000 + number}"}],
            }
            for number in range(400)  # more output than a pipe buffer holds
        ]
        server.cli("entry", "create", "-data", "-", stdin=json.dumps({"entries": entries}).encode())
        argv = [console_script("pyspire-server"), "entry", "show", "-socketPath", str(server.socket_path)]
    else:
        argv = [console_script("pyspire-agent"), "api", "watch", "-socketPath", str(agent.socket_path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # the reader goes away, as `head -1` does
        if command == "agent":  # watch prints again only when the agent pushes
            server.cli("entry", "create", "-parentID", "spiffe://example.org/node/cli", "-spiffeID",
                       "spiffe://example.org/pushed", "-selector", f"unix:uid:{os.getuid()}")  # fmt: skip
        stderr = process.stderr.read().decode()
        code = process.wait(30)
    assert code == -signal.SIGPIPE, stderr
    assert stderr == ""
