"""The VM and its network, read from Azure Resource Graph (and Compute) with the tenant's credential.

The queries are SPIRE's: the VM by ``properties.vmId`` within the document's subscription,
then its network interfaces by ``properties.virtualMachine.id`` (case-insensitively: Resource
Graph lowercases the resource group in ``id`` but not in nested properties), with each
interface's subnets and network security group. A scale set instance is found as SPIRE finds
it: the scale set by name in Resource Graph, then its instances through the Compute API (which
also serves "Uniform" scale sets), the one with the document's VM ID; its interfaces come from
its network profile configuration. A VM that is not found, or found twice, and a failure of
Azure's API refuse the node: selectors are never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions
from pyspire.plugin.errors import Internal, InvalidArgument, NotFound

__all__ = ["DEFAULT_RESOURCE_MANAGER", "NetworkInterface", "ResourceGraph", "VirtualMachine"]

DEFAULT_RESOURCE_MANAGER = "https://management.azure.com"

_VM_QUERY = """
resources
| where type =~ 'microsoft.compute/virtualmachines'
| where properties.vmId == '{vm_id}'
| project id, name, location, tags, vmId = properties.vmId, networkProfile = properties.networkProfile, resourceGroup"""

_VMSS_QUERY = """
resources
| where type =~ 'microsoft.compute/virtualmachinescalesets'
| where name == '{name}'
| project id, name, location, resourceGroup, subscriptionId"""

_VMSS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")
_NSG_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkSecurityGroups/([^/]+)$"
)
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/virtualNetworks/([^/]+)/subnets/([^/]+)$"
)

_NIC_QUERY = """
Resources
| where type == "microsoft.network/networkinterfaces"
| where tolower(properties.virtualMachine.id) == tolower("{resource_id}")
| mv-expand ipConfig = properties.ipConfigurations
| extend subnetId = tostring(ipConfig.properties.subnet.id)
| extend vnetName = extract(@"virtualNetworks/([^/]+)", 1, subnetId)
| extend subnetName = extract(@"subnets/([^/]+)$", 1, subnetId)
| extend subnetObj = bag_pack("vnet", vnetName, "name", subnetName)
| extend nsgId = tostring(properties.networkSecurityGroup.id)
| extend nsgRg = extract(@"resourceGroups/([^/]+)",1,nsgId)
| extend nsgName = extract(@"networkSecurityGroups/([^/]+)",1,nsgId)
| extend securityGroup = bag_pack("resourceGroup", nsgRg, "name",nsgName)
| summarize
    subnets = make_list(subnetObj)
    by id, name, resourceGroup, tostring(securityGroup)
| project name, resourceGroup, subnets, securityGroup"""


@dataclass(frozen=True)
class NetworkInterface:
    """One interface: its security group (resource group, name) and its (vnet, subnet) pairs."""

    security_group: tuple[str, str]
    subnets: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VirtualMachine:
    """What the selectors are made of."""

    name: str
    location: str
    resource_group: str
    tags: Mapping[str, str]
    interfaces: tuple[NetworkInterface, ...]


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _object(value: Any) -> Mapping[str, Any]:
    """A column that is an object, or (``tostring`` of one, as the NIC query summarizes by) its JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _interface(item: Mapping[str, Any]) -> NetworkInterface:
    group = _object(item.get("securityGroup"))
    subnets = item.get("subnets")
    pairs = tuple(
        (_text(subnet, "vnet"), _text(subnet, "name"))
        for subnet in (subnets if isinstance(subnets, list) else [])
        if isinstance(subnet, dict)
    )
    return NetworkInterface((_text(group, "resourceGroup"), _text(group, "name")), pairs)


def _scale_set_vm(instance: Any, group: str) -> VirtualMachine:
    """A scale set instance as a VM; an interface whose IDs do not parse is left out, as SPIRE does."""
    interfaces = []
    profile = instance.properties.network_profile_configuration
    for configuration in (profile.network_interface_configurations or []) if profile is not None else []:
        settings = configuration.properties
        group_id = settings.network_security_group.id if settings and settings.network_security_group else None
        security_group = _NSG_ID.match(group_id or "")
        subnets = [
            _SUBNET_ID.match(ip.properties.subnet.id or "")
            for ip in (settings.ip_configurations or [] if settings else [])
            if ip is not None and ip.properties is not None and ip.properties.subnet is not None
        ]
        if security_group is None or any(match is None for match in subnets):
            continue
        pairs = tuple((match.group(2), match.group(3)) for match in subnets if match is not None)
        interfaces.append(NetworkInterface((security_group.group(1), security_group.group(2)), pairs))
    tags = instance.tags or {}
    return VirtualMachine(
        name=instance.name or "",
        location=instance.location or "",
        resource_group=group,
        tags={key: value for key, value in tags.items() if isinstance(value, str)},
        interfaces=tuple(interfaces),
    )


class ResourceGraph:
    """Resource Graph queries through the tenant's credential."""

    def __init__(self, credential: TokenCredential, endpoint: str = DEFAULT_RESOURCE_MANAGER) -> None:
        endpoint = endpoint.rstrip("/")
        self._credential, self._endpoint = credential, endpoint
        self._client = ResourceGraphClient(credential, base_url=endpoint, credential_scopes=[f"{endpoint}/.default"])

    def scale_set_instance(self, vm_id: str, subscription_id: str, scale_set: str) -> VirtualMachine:
        """The instance ``vm_id`` of the scale set named ``scale_set`` (the agent's untrusted hint)."""
        if not _VMSS_NAME.match(scale_set):
            raise InvalidArgument(
                f'invalid VMSS name "{scale_set}": 1 to 64 letters, digits, "_", "." or "-", '
                'starting with a letter or digit and ending with one or "_"'
            )
        infos = self._query(_VMSS_QUERY.format(name=scale_set), subscription_id, "unable to get VMSS info")
        if len(infos) > 1:
            raise Internal("expected one result for resource at most")
        group = _text(infos[0], "resourceGroup")
        compute = ComputeManagementClient(
            self._credential, subscription_id, base_url=self._endpoint, credential_scopes=[f"{self._endpoint}/.default"]
        )
        try:
            for instance in compute.virtual_machine_scale_set_vms.list(group, scale_set):
                properties = instance.properties
                if properties is not None and properties.vm_id == vm_id:
                    return _scale_set_vm(instance, group)
        except AzureError as err:
            raise Internal(f"unable to list VMSS instances: {getattr(err, 'message', None) or err}") from None
        raise Internal(f'VMSS instance "{vm_id}" not found')

    def virtual_machine(self, vm_id: str, subscription_id: str) -> VirtualMachine:
        items = self._query(_VM_QUERY.format(vm_id=vm_id), subscription_id, "unable to get virtual machine")
        if len(items) > 1:
            raise Internal("expected one result for resource at most")
        vm = items[0]
        interfaces = self._query(
            _NIC_QUERY.format(resource_id=_text(vm, "id")), subscription_id, "unable to get network interfaces"
        )
        tags = vm.get("tags")
        return VirtualMachine(
            name=_text(vm, "name"),
            location=_text(vm, "location"),
            resource_group=_text(vm, "resourceGroup"),
            tags={k: v for k, v in tags.items() if isinstance(v, str)} if isinstance(tags, dict) else {},
            interfaces=tuple(_interface(item) for item in interfaces),
        )

    def _query(self, query: str, subscription_id: str, failure: str) -> list[Mapping[str, Any]]:
        request = QueryRequest(
            subscriptions=[subscription_id], query=query, options=QueryRequestOptions(result_format="objectArray")
        )
        try:
            response = self._client.resources(request)
        except AzureError as err:
            raise Internal(f"{failure}: {err.message if hasattr(err, 'message') else err}") from None
        data: Any = response.data
        if not response.total_records or not isinstance(data, list) or not data:
            raise NotFound("resource not found")
        if not all(isinstance(item, dict) for item in data):
            raise Internal(f"{failure}: Resource Graph answered rows that are not objects")
        return data
