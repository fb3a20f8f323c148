"""A real server and agent attesting with azure_imds against Azure's endpoints on loopback.

The agent answers the server's nonce with IMDS's attested document; the server verifies it,
learns the tenant ID from Entra, reads the VM from Resource Graph with the tenant's app
secret, and issues the agent its SVID; a workload then gets its own. A second agent on the
same VM, and an agent naming a tenant the server does not know, are refused with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.azure_imds.tests.fakes import SUBSCRIPTION_ID, TENANT_DOMAIN, TENANT_ID, VM_ID, AzureFake
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def hcl(plugin_data: dict[str, Any]) -> str:
    """``plugin_data`` as HCL (strings, lists of strings and nested maps are all these tests need)."""

    def value(item: Any) -> str:
        if isinstance(item, dict):
            return "{\n" + "".join(f'"{k}" = {value(v)}\n' for k, v in item.items()) + "}"
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return f'"{item}"'

    return "".join(f"  {key} = {value(item)}\n" for key, item in plugin_data.items())


def test_agent_attests_with_azure_imds_and_wrong_tenants_and_replays_are_refused(
    tmp_path: Path, azure: AzureFake
) -> None:
    data = azure.server_plugin_data(allowed_vm_tags=["environment"], restrict_to_subscriptions=[SUBSCRIPTION_ID])
    server = start_server(
        tmp_path / "server",
        env=azure.env(),
        plugins=f'NodeAttestor "azure_imds" {{\n plugin_data {{\n{hcl(data)} }}\n }}',
    )

    def attestor(domain: str) -> str:
        return (
            'NodeAttestor "azure_imds" {\n plugin_data {\n'
            f'  tenant_domain = "{domain}"\n  imds_host = "{azure.imds_host}"\n }}\n }}'
        )

    agent = second = stranger = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor(TENANT_DOMAIN))
        agent_id = f"spiffe://example.org/spire/agent/azure_imds/{TENANT_ID}/{SUBSCRIPTION_ID}/{VM_ID}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : azure_imds" in shown
        for selector in (
            f"subscription-id:{SUBSCRIPTION_ID}",
            "vm-name:blog",
            "network-security-group:frontend:webservers",
            "virtual-network-subnet:vnet:default",
            "vm-tag:environment:production",
        ):
            assert f"Selectors         : azure_imds:{selector}" in shown
        assert "vm-tag:owner" not in shown

        register_this_process(server, agent_id, "spiffe://example.org/blog")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/blog"

        second = start_agent(tmp_path / "second", server, node_attestor=attestor(TENANT_DOMAIN), wait=False)
        assert second.process is not None
        assert second.process.wait(30) == 1
        assert "attestation data has already been used to attest an agent" in second.log()

        stranger = start_agent(
            tmp_path / "stranger", server, node_attestor=attestor("other.onmicrosoft.com"), wait=False
        )
        assert stranger.process is not None
        assert stranger.process.wait(30) == 1
        refusal = (
            'refused attestation (PERMISSION_DENIED): nodeattestor(azure_imds): tenant \\"other.onmicrosoft.com\\"'
        )
        assert refusal in stranger.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (stranger, second, agent, server):
            if daemon is not None:
                daemon.stop()
