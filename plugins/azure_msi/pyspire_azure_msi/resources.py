"""The VM of a managed identity and its network, read from Azure Resource Manager, as SPIRE reads them.

The VM is the one resource of type ``Microsoft.Compute/virtualMachines`` whose identity has the
token's principal ID, in the tenant's subscription; then the VM (for its network profile) and each
network interface (for its security group and subnets). A principal with no VM, or more than one,
and a failure of Azure's API refuse the node.
"""

from __future__ import annotations

import re
import uuid

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource import ResourceManagementClient
from pyspire.plugin.errors import Internal, InvalidArgument

__all__ = ["DEFAULT_RESOURCE_MANAGER", "ResourceManager"]

DEFAULT_RESOURCE_MANAGER = "https://management.azure.com"

_VM_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$"
)
_NIC_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkInterfaces/([^/]+)$"
)
_NSG_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkSecurityGroups/([^/]+)$"
)
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/virtualNetworks/([^/]+)/subnets/([^/]+)$"
)


def _parse(pattern: re.Pattern[str], what: str, resource_id: str | None) -> tuple[str, ...]:
    match = pattern.match(resource_id or "")
    if match is None:
        raise Internal(f'malformed {what} ID "{resource_id}"')
    return match.groups()


def _failure(err: AzureError) -> str:
    return str(getattr(err, "message", None) or err)


class ResourceManager:
    """The three Resource Manager clients of one subscription, with the tenant's credential."""

    def __init__(
        self, credential: TokenCredential, subscription_id: str, endpoint: str = DEFAULT_RESOURCE_MANAGER
    ) -> None:
        endpoint = endpoint.rstrip("/")
        scopes = [f"{endpoint}/.default"]
        self.subscription_id = subscription_id
        self._resources = ResourceManagementClient(
            credential, subscription_id, base_url=endpoint, credential_scopes=scopes
        )
        self._compute = ComputeManagementClient(
            credential, subscription_id, base_url=endpoint, credential_scopes=scopes
        )
        self._network = NetworkManagementClient(
            credential, subscription_id, base_url=endpoint, credential_scopes=scopes
        )

    def selectors(self, principal_id: str) -> tuple[str, ...]:
        """SPIRE's selectors for the VM whose identity is ``principal_id``, sorted and without repeats."""
        try:
            uuid.UUID(principal_id)  # it goes into an OData filter: only a principal ID's shape gets there
        except ValueError:
            raise InvalidArgument(f'principal ID "{principal_id}" is not a UUID') from None
        group, name = self._vm_of(principal_id)
        values = {f"subscription-id:{self.subscription_id}", f"vm-name:{group}:{name}"}
        try:
            vm = self._compute.virtual_machines.get(group, name)
        except AzureError as err:
            raise Internal(f'unable to get virtual machine "{group}:{name}": {_failure(err)}') from None
        profile = vm.network_profile
        for reference in (profile.network_interfaces or []) if profile is not None else []:
            if not reference.id:
                continue
            nic_group, nic_name = _parse(_NIC_ID, "network interface", reference.id)
            try:
                nic = self._network.network_interfaces.get(nic_group, nic_name)
            except AzureError as err:
                raise Internal(f'unable to get network interface "{nic_group}:{nic_name}": {_failure(err)}') from None
            if nic.network_security_group is not None and nic.network_security_group.id:
                values.add(
                    "network-security-group:{}:{}".format(
                        *_parse(_NSG_ID, "network security group", nic.network_security_group.id)
                    )
                )
            for configuration in nic.ip_configurations or []:
                if configuration.subnet is not None and configuration.subnet.id:
                    subnet_group, vnet, subnet = _parse(_SUBNET_ID, "virtual network subnet", configuration.subnet.id)
                    values.add(f"virtual-network:{subnet_group}:{vnet}")
                    values.add(f"virtual-network-subnet:{subnet_group}:{vnet}:{subnet}")
        return tuple(sorted(values))

    def _vm_of(self, principal_id: str) -> tuple[str, str]:
        query = f"resourceType eq 'Microsoft.Compute/virtualMachines' and identity/principalId eq '{principal_id}'"
        try:
            found = list(self._resources.resources.list(filter=query))
        except AzureError as err:
            raise Internal(
                f'unable to get resource for principal "{principal_id}": '
                f"unable to list virtual machine by principal: {_failure(err)}"
            ) from None
        if not found:
            raise Internal(f'unable to get resource for principal "{principal_id}": principal not found')
        if len(found) > 1:
            raise Internal(f'unable to get resource for principal "{principal_id}": expected one result at most')
        group, name = _parse(_VM_ID, "virtual machine", found[0].id)
        return group, name
