"""The batch commands, differentially: ``federation create|update`` (one relationship from flags,
or many from SPIRE's ``-data`` JSON in a file or on stdin), ``federation list|show``, and
``entry create|update|delete`` with items the server refuses.

The same command lines go to spire-server and pyspire-server, in order, so both datastores
hold the same relationships throughout. Nothing in the output is chosen by a server (the
bundles are the test's): exit code and stdout, pretty or ``-output json``, must be equal.
A batch mixing good and bad items creates the good ones and fails the command on both; with
``-output json`` the command succeeds and the results say which items failed.

Normalised, as docs/compatibility.md explains: the order of a listing (SPIRE's is creation
order, pyspire's by trust domain), the status of a refused item (SPIRE passes on its
database's error), and an empty ``wit_authorities`` (a field of the API after v1.13.3). The
entry commands' stdout and their own lines on stderr are compared once entry IDs are replaced.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import Bundle, TrustDomain

from tests.support.daemons import ServerDaemon
from tests.support.pki import make_ca

WEB_A = {"trustDomain": "a.org", "bundleEndpointURL": "https://a.org/bundle", "bundleEndpointProfile": "https_web"}
COMMANDS = [
    ("federation list", None),
    ("federation create -data {files}/two.json", None),
    ("federation list", None),
    ("federation show -trustDomain b.org", None),
    ("federation show -trustDomain b.org -output json", None),
    ("federation create -data - -output json", "spiffe-bundle.json"),
    ("federation create -data {files}/lower-case-keys.json", None),
    ("federation create -data {files}/mixed.json", None),
    ("federation create -data {files}/mixed-again.json -output json", None),
    ("federation update -data {files}/update.json", None),
    ("federation update -data - -output json", "update.json"),
    ("federation list -output json", None),
    ("federation create -data {files}/empty.json", None),
    # Refused before anything is sent.
    ("federation create -data {files}/two.json -trustDomain z.org", None),
    ("federation create -data {files}/two.json -trustDomainBundleFormat spiffe", None),
    ("federation create -data {files}/bundle-without-format.json", None),
    ("federation create -data {files}/unknown-profile.json", None),
    ("federation create -data {files}/no-url.json", None),
    ("federation create -data {files}/not-json", None),
    ("federation create -data {files}/missing.json", None),
    ("federation create -trustDomain g.org -bundleEndpointURL https://g.org", None),
    ("federation create -trustDomain g.org -bundleEndpointURL https://g.org -bundleEndpointProfile https_web", None),
    (
        "federation update -trustDomain g.org -bundleEndpointURL https://g.org/new -bundleEndpointProfile https_web",
        None,
    ),
    ("federation list", None),
]


ENTRY = "-spiffeID spiffe://example.org/batch/x -parentID spiffe://example.org/batch/node -selector unix:uid:1"
ENTRY_COMMANDS = [
    f"entry create {ENTRY}",
    f"entry create {ENTRY}",
    f"entry create {ENTRY} -output json",
    f"entry update -entryID nope {ENTRY}",
    f"entry update -entryID nope {ENTRY} -output json",
    "entry delete -entryID nope",
    "entry delete -entryID nope -output json",
]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("federation-data")
    b_ca = make_ca("b.org").certificate
    c_ca = make_ca("c.org").certificate
    pem = b_ca.public_bytes(serialization.Encoding.PEM).decode()
    spiffe_bundle = Bundle(TrustDomain("c.org"), [c_ca]).to_spiffe_document()
    b_spiffe = {
        "trustDomain": "b.org",
        "bundleEndpointURL": "https://b.org:8443",
        "bundleEndpointProfile": "https_spiffe",
        "endpointSPIFFEID": "spiffe://b.org/spire/server",
        "trustDomainBundle": pem,
        "trustDomainBundleFormat": "pem",
    }
    documents = {
        "two.json": [WEB_A, b_spiffe],
        "spiffe-bundle.json": [
            {
                "trustDomain": "c.org",
                "bundleEndpointURL": "https://c.org",
                "bundleEndpointProfile": "https_spiffe",
                "endpointSPIFFEID": "spiffe://c.org/server",
                "trustDomainBundle": spiffe_bundle,
                "trustDomainBundleFormat": "spiffe",
            }
        ],
        "lower-case-keys.json": [
            {"trustdomain": "f.org", "BUNDLEENDPOINTURL": "https://f.org", "bundleEndpointprofile": "https_web"}
        ],
        "mixed.json": [{**WEB_A, "trustDomain": "d.org"}, WEB_A, {**WEB_A, "trustDomain": "e..org"}],
        "mixed-again.json": [{**WEB_A, "trustDomain": "h.org"}, WEB_A],
        "update.json": [
            {**WEB_A, "bundleEndpointURL": "https://a.org/moved"},
            {**b_spiffe, "endpointSPIFFEID": "spiffe://b.org/other"},
            {**WEB_A, "trustDomain": "nobody.org"},
        ],
        "empty.json": [],
        "bundle-without-format.json": [{**b_spiffe, "trustDomainBundleFormat": None}],
        "unknown-profile.json": [{**WEB_A, "bundleEndpointProfile": "https"}],
        "no-url.json": [{"trustDomain": "i.org", "bundleEndpointProfile": "https_web"}],
    }
    for name, relationships in documents.items():
        key = "federationrelationships" if name == "lower-case-keys.json" else "federationRelationships"
        (directory / name).write_text(json.dumps({key: relationships}))
    (directory / "not-json").write_text("federationRelationships: []\n")
    return directory


def _normalised_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_normalised_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    found = {key: _normalised_json(item) for key, item in value.items() if (key, item) != ("wit_authorities", [])}
    if found.get("status", {}).get("code"):
        found["status"] = "<refused>"
    if "federation_relationships" in found:
        found["federation_relationships"].sort(key=lambda relationship: relationship["trust_domain"])
    return found


def _answer(server: ServerDaemon, command: str, stdin: str | None, files: Path) -> tuple[int, Any]:
    argv = [arg.replace("{files}", str(files)) for arg in shlex.split(command)]
    result = server.cli(*argv, check=False, stdin=(files / stdin).read_bytes() if stdin else None)
    if "-output json" in command and result.returncode == 0:
        return result.returncode, _normalised_json(json.loads(result.stdout))
    if command.startswith("federation list"):
        heading, _, relationships = result.stdout.partition("\n\n")
        return result.returncode, [heading, *sorted(block.strip() for block in relationships.split("\n\n"))]
    return result.returncode, result.stdout


@pytest.mark.parametrize(("command", "stdin"), COMMANDS)
def test_federation_commands_answer_as_spire_servers_do(
    command: str, stdin: str | None, files: Path, server_pair: dict[str, ServerDaemon]
) -> None:
    spire, pyspire = (_answer(server_pair[name], command, stdin, files) for name in ("spire", "pyspire"))
    assert pyspire == spire


def _entry_answer(server: ServerDaemon, command: str) -> tuple[int, str, str]:
    result = server.cli(*shlex.split(command), check=False)
    if "-output json" in command:
        return result.returncode, "", ""
    # The refused entry shown after "Failed to ..." is what the server's result holds for it,
    # which the Entry API's corpus compares; here the CLI's own lines are.
    own_lines = [line for line in result.stderr.splitlines() if line.startswith(("Failed to", "Error:"))]
    return result.returncode, _UUID.sub("<id>", result.stdout), "\n".join(own_lines)


@pytest.mark.parametrize("command", ENTRY_COMMANDS)
def test_entry_batches_with_refused_items_answer_as_spire_servers_do(
    command: str, server_pair: dict[str, ServerDaemon]
) -> None:
    spire, pyspire = (_entry_answer(server_pair[name], command) for name in ("spire", "pyspire"))
    assert pyspire == spire
