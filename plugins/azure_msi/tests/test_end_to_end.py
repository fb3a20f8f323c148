"""A real server and agent attesting with azure_msi against Azure's endpoints on loopback.

The agent sends its managed identity token from IMDS; the server verifies it against Entra's
keys, reads the VM behind the identity from Resource Manager with the tenant's app secret and
issues the agent its SVID; a workload then gets its own. A second agent with the same identity
(a replayed token) and an agent whose token is for another resource are refused with the reason.
"""

from __future__ import annotations

from pathlib import Path

from plugins.azure_msi.tests.fakes import PRINCIPAL_ID, SUBSCRIPTION_ID, TENANT_ID, MsiFake
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def test_agent_attests_with_azure_msi_and_replays_and_foreign_audiences_are_refused(
    tmp_path: Path, azure: MsiFake
) -> None:
    data = azure.server_plugin_data()
    tenant = "".join(f'   {key} = "{value}"\n' for key, value in data["tenants"][TENANT_ID].items())
    plugin_data = "".join(f'  {key} = "{value}"\n' for key, value in data.items() if key != "tenants")
    server = start_server(
        tmp_path / "server",
        env=azure.env(),
        plugins=(
            'NodeAttestor "azure_msi" {\n plugin_data {\n'
            f'  tenants = {{\n  "{TENANT_ID}" = {{\n{tenant}  }}\n  }}\n{plugin_data} }}\n }}'
        ),
    )

    def attestor(resource: str = "https://management.azure.com/") -> str:
        return (
            'NodeAttestor "azure_msi" {\n plugin_data {\n'
            f'  imds_host = "{azure.imds_host}"\n  resource_id = "{resource}"\n }}\n }}'
        )

    agent = second = foreign = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor())
        agent_id = f"spiffe://example.org/spire/agent/azure_msi/{TENANT_ID}/{PRINCIPAL_ID}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : azure_msi" in shown
        for selector in (f"subscription-id:{SUBSCRIPTION_ID}", "vm-name:frontend:blog", "virtual-network:network:vnet"):
            assert f"Selectors         : azure_msi:{selector}" in shown

        register_this_process(server, agent_id, "spiffe://example.org/blog")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/blog"

        second = start_agent(tmp_path / "second", server, node_attestor=attestor(), wait=False)
        assert second.process is not None
        assert second.process.wait(30) == 1
        assert "attestation data has already been used to attest an agent" in second.log()

        foreign = start_agent(
            tmp_path / "foreign", server, node_attestor=attestor("https://vault.azure.net"), wait=False
        )
        assert foreign.process is not None
        assert foreign.process.wait(60) == 1
        assert "unable to validate token claims: audience" in foreign.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (foreign, second, agent, server):
            if daemon is not None:
                daemon.stop()
