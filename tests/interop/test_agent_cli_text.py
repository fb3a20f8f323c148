"""``agent list`` and ``agent show`` print what spire-server's CLI prints (values normalised).

Both servers get one join-token agent; the text of both commands is compared line by line,
with the agent's token, serial number and expiry replaced by placeholders. Then the agent
is banned and compared again (SPIRE shows ``Banned`` in place of the serial).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.daemons import ServerDaemon, start_agent, start_server

pytestmark = pytest.mark.slow

_VALUES = [
    (re.compile(r"join_token/[0-9a-f-]{36}"), "join_token/<token>"),
    (re.compile(r"(Serial number     : )\d+"), r"\1<serial>"),
    (re.compile(r"(Expiration time   : )\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \w+"), r"\1<time>"),
]


def _normalised(text: str) -> str:
    for pattern, placeholder in _VALUES:
        text = pattern.sub(placeholder, text)
    return text


def _texts(server: ServerDaemon, agent_id: str) -> list[str]:
    return [
        _normalised(server.cli("agent", "show", "-spiffeID", agent_id).stdout),
        _normalised(server.cli("agent", "list").stdout),
    ]


def test_agent_list_and_show_print_spires_text(tmp_path: Path, spire_server_bin: Path) -> None:
    found: dict[str, list[str]] = {}
    for name, executable in (("spire", spire_server_bin), ("pyspire", None)):
        server = start_server(tmp_path / name, executable=executable)
        token = server.join_token()
        agent = start_agent(tmp_path / f"{name}-agent", server, token)
        try:
            agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
            found[name] = _texts(server, agent_id)
            server.cli("agent", "ban", "-spiffeID", agent_id)
            found[name] += _texts(server, agent_id)
        finally:
            agent.stop()
            server.stop()
    assert found["pyspire"] == found["spire"]
    assert "Banned            : true" in found["spire"][2]
