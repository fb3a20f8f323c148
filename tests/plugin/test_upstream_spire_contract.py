"""The built-in spire UpstreamAuthority under the UpstreamAuthority contract: a real upstream pyspire server.

This test process is the downstream server's workload: the upstream's agent gives it a
``-downstream`` SVID, with which the plugin asks the upstream server for intermediate CAs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import UpstreamAuthorityContract

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

DOWNSTREAM_ID = "spiffe://example.org/downstream-server"


@pytest.fixture(scope="module")
def upstream_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("upstream")
    server = start_server(directory / "server")
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        agent = start_agent(directory / "agent", server, server.join_token(alias))
        register_this_process(server, alias, DOWNSTREAM_ID, "-downstream")
        assert fetched_spiffe_id(agent) == DOWNSTREAM_ID
        yield server, agent
    finally:
        for daemon in (agent, server):
            if daemon is not None:
                daemon.stop()


@pytest.mark.slow
class TestSpireUpstreamContract(UpstreamAuthorityContract):
    plugin = "spire"

    @pytest.fixture
    def plugin_data(self, upstream_tree: tuple[ServerDaemon, AgentDaemon], tmp_path: Path) -> Mapping[str, Any]:
        server, agent = upstream_tree
        return {
            "server_address": "127.0.0.1",
            "server_port": str(server.port),
            "workload_api_socket": str(agent.socket_path),
        }
