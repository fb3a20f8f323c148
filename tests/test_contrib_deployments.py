"""The example deployments in contrib/ load as pyspire reads them, and say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspire.config import load_agent_config, load_server_config
from pyspire.spiffe import TrustDomain

CONTRIB = Path(__file__).parent.parent / "contrib"


@pytest.mark.parametrize(("name", "partner"), [("a", "b"), ("b", "a")])
def test_the_federated_servers_serve_and_fetch_each_others_bundle(name: str, partner: str) -> None:
    config = load_server_config(CONTRIB / "federation" / f"server-{name}.conf")
    partner_config = load_server_config(CONTRIB / "federation" / f"server-{partner}.conf")
    federation = config.server.federation
    assert federation.bundle_endpoint is not None
    assert list(federation.federates_with) == [TrustDomain.parse(f"{partner}.org")]
    relationship = federation.federates_with[TrustDomain.parse(f"{partner}.org")]
    assert relationship.bundle_endpoint_profile.https_spiffe is not None
    partner_endpoint = partner_config.server.federation.bundle_endpoint
    assert partner_endpoint is not None
    assert relationship.bundle_endpoint_url == f"https://127.0.0.1:{partner_endpoint.port}"
    agent = load_agent_config(CONTRIB / "federation" / f"agent-{name}.conf")
    assert agent.agent.trust_domain == config.server.trust_domain
    assert agent.agent.server_port == config.server.bind_port


def test_the_ha_servers_share_a_database_and_the_agent_knows_both() -> None:
    servers = [load_server_config(CONTRIB / "ha" / f"server-{n}.conf") for n in (1, 2)]
    datastores = [next(p for p in s.plugins if p.type == "DataStore").plugin_data for s in servers]
    assert datastores[0] == datastores[1]
    assert datastores[0]["database_type"] == "postgres"
    key_paths = {next(p for p in s.plugins if p.type == "KeyManager").plugin_data["keys_path"] for s in servers}
    assert len(key_paths) == 2  # each server its own CA key
    agent = load_agent_config(CONTRIB / "ha" / "agent.conf")
    assert set(agent.agent.servers) == {("127.0.0.1", s.server.bind_port) for s in servers}
