"""spire-server's and pyspire-server's command lines, each against its own server, differentially.

The same command line (Go's flag syntax included: ``--flag``, ``-bool=false``) run with both
programs: the exit codes must be equal, and ``-output json`` equal once the values each
server chose (IDs, times, keys, certificates, tokens) are replaced.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from typing import Any

import pytest

from tests.support.daemons import ServerDaemon

TD = "spiffe://example.org"
COMMANDS = [
    f"entry create --spiffeID {TD}/cli/a -parentID {TD}/cli/node -selector unix:uid:1 -admin=false -output json",
    f"entry create -spiffeID={TD}/cli/b -parentID {TD}/cli/node -selector unix:uid:2 -admin=true -dns d.example.org"
    " -output json",
    f"entry create -spiffeID {TD}/cli/c -parentID {TD}/cli/node -selector unix:uid:3 -admin=maybe",
    f"entry show -spiffeID {TD}/cli/a -output json",
    f"entry show -parentID {TD}/cli/node -output json",
    "entry count -output json",
    "agent list -output json",
    "agent count -output json",
    "agent list -attestationType join_token -banned false -canReattest true"
    " -expiresBefore '2030-01-01 00:00:00 +0000 +00' -selector a:b -matchSelectorsOn any -output json",
    "agent count -banned=x -canReattest maybe -selector a:b -selector c:d -output json",
    "agent count -expiresBefore 2030-01-01",
    "agent list -matchSelectorsOn sometimes -selector a:b",
    "federation list -output json",
    "bundle count -output json",
    "bundle list -output json",
    "token generate -ttl 60 -output json",
    f"token generate -ttl 60 -spiffeID {TD}/cli/alias -output json",
    "healthcheck -shallow=true",
    "healthcheck -shallow=nope",
]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CHOSEN = frozenset({"created_at", "expires_at", "id", "value", "key_id", "public_key", "asn1", "sequence_number"})


def _normalized(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalized(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normalized(v) for v in value]
        # Listing order is not part of the API (SPIRE: creation order; pyspire: entry ID order).
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True)) if key == "entries" else items
    if key in _CHOSEN and value not in ("", "0", 0):
        return "<chosen>"
    return _UUID.sub("<uuid>", value) if isinstance(value, str) else value


def _answer(server: ServerDaemon, command: str) -> dict[str, Any]:
    result = server.cli(*shlex.split(command), check=False)
    answer: dict[str, Any] = {"exit code": result.returncode}
    if "-output json" in command and result.returncode == 0:
        lines = result.stdout.splitlines()
        answer["lines"] = len(lines)
        answer["json"] = _normalized(json.loads(result.stdout))
    return answer


@pytest.mark.parametrize("command", COMMANDS)
def test_server_cli_answers_as_spire_server_does(command: str, server_pair: dict[str, ServerDaemon]) -> None:
    spire, pyspire = (_answer(server_pair[name], command) for name in ("spire", "pyspire"))
    assert pyspire == spire


TEXT_COMMANDS = [
    "localauthority x509 show",
    "localauthority jwt show",
    "token generate -ttl 60",
    f"token generate -ttl 60 -spiffeID {TD}/cli/text",
    "healthcheck -verbose",
    "bundle count",
    "agent count",
]
_CHOSEN_TEXT = [
    (re.compile(r"(Authority ID: )\S+"), r"\1<id>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC"), "<time>"),
    (_UUID, "<uuid>"),
]


def _text(server: ServerDaemon, command: str) -> tuple[int, str]:
    result = server.cli(*shlex.split(command), check=False)
    text = result.stdout
    for pattern, placeholder in _CHOSEN_TEXT:
        text = pattern.sub(placeholder, text)
    return result.returncode, text


@pytest.mark.parametrize("command", TEXT_COMMANDS)
def test_server_cli_prints_what_spire_server_prints(command: str, server_pair: dict[str, ServerDaemon]) -> None:
    spire, pyspire = (_text(server_pair[name], command) for name in ("spire", "pyspire"))
    assert pyspire == spire


def test_x509_mint_json_has_spires_shape(server_pair: dict[str, ServerDaemon]) -> None:
    """SPIRE prints a Go struct, not a message: a list of one object, its keys in its order, base64 DER."""
    shapes = []
    for name in ("spire", "pyspire"):
        minted = server_pair[name].cli("x509", "mint", "-spiffeID", f"{TD}/cli/minted", "-output", "json").stdout
        (item,) = json.loads(minted)
        shapes.append(
            [(key, len(value) if isinstance(value, list) else type(value).__name__) for key, value in item.items()]
        )
        assert base64.b64decode(item["private_key"])
    assert shapes[1] == shapes[0] == [("x509_svid", 1), ("private_key", "str"), ("root_cas", 1)]
