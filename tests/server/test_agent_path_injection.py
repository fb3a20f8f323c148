"""Agent-path template injection (reliability case 9) against a real server.

An x509pop server renders agent IDs from the node certificate's common name, a value the node
chooses. Whatever it holds, the result is either refused with no node record, or the agent ID
with that value verbatim under ``/spire/agent/x509pop/``: never the server's ID, never
another path after normalisation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.exceptions import GRPCError
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.plugin.test_x509pop import node_certificate
from tests.server.test_api_security import roots
from tests.support.daemons import ServerDaemon, start_server
from tests.support.pki import make_ca
from tests.support.x509pop_nodes import PopNode, x509pop_server_plugin

ROOT = make_ca(name="fleet root")
REFUSED = ["../../server", ".", "..", "%2e%2e", "a//b", "x/../../../spire/server", "a\\nb", "sp ace"]
VERBATIM = ["A/B", "spire/server", "Node-1.example"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    (directory / "roots.pem").write_bytes(ROOT.certificate.public_bytes(serialization.Encoding.PEM))
    daemon = start_server(
        directory,
        extra="ratelimit {\n attestation = false\n }",
        plugins=x509pop_server_plugin(directory / "roots.pem", "{{ .PluginName }}/{{ .Subject.CommonName }}"),
    )
    yield daemon
    daemon.stop()


def _attest(server: ServerDaemon, directory: Path, common_name: str) -> str:
    node = PopNode(directory, node_certificate(ROOT, common_name=common_name))

    async def run() -> str:
        client, chain, _ = await node.attest(server.port, roots(server))
        client.close()
        return str(leaf_spiffe_id(chain[0]))

    return asyncio.run(run())


@pytest.mark.parametrize("common_name", REFUSED)
def test_a_value_that_is_no_path_segment_is_refused_with_no_node_record(
    server: ServerDaemon, tmp_path: Path, common_name: str
) -> None:
    before = server.cli("agent", "list").stdout
    with pytest.raises(GRPCError) as raised:
        _attest(server, tmp_path, common_name)
    # SPIRE: Internal "invalid agent ID" (the attestor, not the caller, produced it).
    assert raised.value.status.name == "INTERNAL", raised.value
    assert server.cli("agent", "list").stdout == before
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("common_name", VERBATIM)
def test_a_valid_value_is_taken_verbatim_under_the_agent_namespace(
    server: ServerDaemon, tmp_path: Path, common_name: str
) -> None:
    agent_id = _attest(server, tmp_path, common_name)
    assert agent_id == f"spiffe://example.org/spire/agent/x509pop/{common_name}"
    assert agent_id != "spiffe://example.org/spire/server"
