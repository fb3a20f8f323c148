"""``logger get|set|reset`` of spire-server and pyspire-server, each against its own server.

Both servers start at ``WARN``; the commands run in order on both, so each one sees the level
the previous one left. Nothing here is chosen by a server: exit code and stdout (pretty text
and ``-output json``) must be equal byte for byte.
"""

from __future__ import annotations

import shlex

import pytest

from tests.support.daemons import ServerDaemon

COMMANDS = [
    "logger get",
    "logger get -output json",
    "logger set -level debug -output json",
    "logger set -level WARNING",
    "logger set -level trace",
    "logger get -output json",
    "logger set -level panic -output json",
    "logger set -level fatal",
    "logger set --level=Info",
    "logger set -level=warn -output json",
    "logger set -level error -output pretty",
    "logger get",
    "logger reset -output json",
    "logger set -level bogus",
    "logger set",
    "logger set -level debug -output yaml",
    "logger set -level trace",
    "logger reset",
    "logger get",
]


def _answer(server: ServerDaemon, command: str) -> tuple[int, str]:
    result = server.cli(*shlex.split(command), check=False)
    return result.returncode, result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_logger_commands_answer_as_spire_servers_do(command: str, server_pair: dict[str, ServerDaemon]) -> None:
    spire, pyspire = (_answer(server_pair[name], command) for name in ("spire", "pyspire"))
    assert pyspire == spire
