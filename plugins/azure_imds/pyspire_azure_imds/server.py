"""The server side of ``azure_imds``: a nonce, Azure's signed answer, a tenant, a subscription.

The server sends a fresh random nonce; the agent answers with IMDS's attested document over
it. The document's signature and chain are verified before anything in it is used
(:mod:`pyspire_azure_imds.document`); then the nonce must be this attestation's (a document
recorded earlier is refused), the VM ID a UUID, the agent's tenant domain one of ``tenants``
and the subscription one the tenant allows. The selectors come from Resource Graph (and, for a
scale set instance, the Compute API) with the tenant's credential; a failure there refuses the
node. Trust on first use is the server core's: the result is not re-attestable, so a second
agent for the same VM is refused.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.spiffe.pem import pem_certificates
from pyspire_azure_common.credentials import DEFAULT_AUTHORITY, TenantLookupError, credential, lookup_tenant_id

from pyspire_azure_imds.document import DEFAULT_CA_ISSUERS_HOST, DocumentRefused, DocumentVerifier, default_roots
from pyspire_azure_imds.protocol import FIRST_PAYLOAD, PLUGIN_NAME, AttestationPayload
from pyspire_azure_imds.resources import DEFAULT_RESOURCE_MANAGER, ResourceGraph, VirtualMachine

__all__ = ["ServerAzureImds", "ServerAzureImdsConfig"]

DEFAULT_TEMPLATE = "/{{ .PluginName }}/{{ .TenantID }}/{{ .SubscriptionID }}/{{ .VMID }}"
NONCE_LENGTH = 32
_NONCE_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class SecretAuthConfig:
    """``secret_auth``: an app registration's ID and secret."""

    app_id: str = ""
    app_secret: str = ""


@dataclass(frozen=True)
class TokenAuthConfig:
    """``token_auth``: an app registration's ID and a JWT file presented as its client assertion."""

    app_id: str = ""
    token_path: str = ""


@dataclass(frozen=True)
class TenantConfig:
    """One entry of ``tenants``, keyed by tenant domain."""

    secret_auth: SecretAuthConfig | None = None
    token_auth: TokenAuthConfig | None = None
    restrict_to_subscriptions: list[str] = field(default_factory=list)
    allowed_vm_tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServerAzureImdsConfig:
    """``plugin_data`` of the server's ``NodeAttestor "azure_imds"`` (SPIRE's keys, and three of pyspire's)."""

    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    agent_path_template: str = DEFAULT_TEMPLATE
    trust_bundle_path: str = ""
    authority_host: str = DEFAULT_AUTHORITY
    resource_manager_endpoint: str = DEFAULT_RESOURCE_MANAGER
    ca_issuers_host: str = DEFAULT_CA_ISSUERS_HOST


@dataclass(frozen=True)
class _Tenant:
    tenant_id: str
    resources: ResourceGraph
    subscriptions: frozenset[str]
    allowed_tags: frozenset[str]


def _tenant(domain: str, tenant: TenantConfig, config: ServerAzureImdsConfig) -> _Tenant:
    key = f"tenants.{domain}"
    try:
        tenant_id = lookup_tenant_id(domain, config.authority_host)
    except TenantLookupError as err:
        raise PluginConfigError(key, f"unable to lookup tenant ID: {err}") from None
    secret = assertion = None
    if tenant.secret_auth is not None and tenant.token_auth is not None:
        raise PluginConfigError(key, "only one of secret_auth or token_auth may be specified")
    if tenant.secret_auth is not None:
        if not tenant.secret_auth.app_id:
            raise PluginConfigError(f"{key}.secret_auth.app_id", "missing app id")
        if not tenant.secret_auth.app_secret:
            raise PluginConfigError(f"{key}.secret_auth.app_secret", "missing app secret")
        secret = (tenant.secret_auth.app_id, tenant.secret_auth.app_secret)
    if tenant.token_auth is not None:
        if not tenant.token_auth.token_path:
            raise PluginConfigError(f"{key}.token_auth.token_path", "missing token file path")
        if not tenant.token_auth.app_id:
            raise PluginConfigError(f"{key}.token_auth.app_id", "missing app id")
        assertion = (tenant.token_auth.app_id, tenant.token_auth.token_path)
    subscriptions = [value.strip() for value in tenant.restrict_to_subscriptions]
    if any(not value for value in subscriptions):
        raise PluginConfigError(f"{key}.restrict_to_subscriptions", "entries must be non-empty")
    login = credential(tenant_id, secret=secret, assertion=assertion, authority=config.authority_host)
    return _Tenant(
        tenant_id,
        ResourceGraph(login, config.resource_manager_endpoint),
        frozenset(subscriptions),
        frozenset(tenant.allowed_vm_tags),
    )


def _roots(trust_bundle_path: str) -> list[x509.Certificate]:
    roots = default_roots()
    if trust_bundle_path:
        try:
            roots.extend(pem_certificates(Path(trust_bundle_path).read_bytes()))
        except (OSError, ValueError) as err:
            raise PluginConfigError(
                "trust_bundle_path", f'cannot read root CAs from "{trust_bundle_path}": {err}'
            ) from None
    return roots


def _selectors(vm: VirtualMachine, subscription_id: str, allowed_tags: frozenset[str]) -> tuple[str, ...]:
    values = {
        f"subscription-id:{subscription_id}",
        f"vm-name:{vm.name}",
        f"vm-location:{vm.location}",
        f"resource-group:{vm.resource_group}",
    }
    values.update(f"vm-tag:{tag}:{vm.tags[tag]}" for tag in allowed_tags if tag in vm.tags)
    for interface in vm.interfaces:
        values.add("network-security-group:{}:{}".format(*interface.security_group))
        for vnet, subnet in interface.subnets:
            values.add(f"virtual-network:{vnet}")
            values.add(f"virtual-network-subnet:{vnet}:{subnet}")
    return tuple(sorted(values))


class ServerAzureImds:
    """Attests Azure VMs by IMDS attested documents over a server nonce."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] | None = None
        self._verifier = DocumentVerifier([])
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerAzureImdsConfig, plugin_data)
        if not config.tenants:
            raise PluginConfigError("tenants", "configuration must have at least one tenant")
        template = AgentPathTemplate(config.agent_path_template)
        verifier = DocumentVerifier(_roots(config.trust_bundle_path), config.ca_issuers_host)
        tenants = {domain: _tenant(domain, tenant, config) for domain, tenant in config.tenants.items()}
        self._template, self._verifier, self._tenants = template, verifier, tenants

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        if self._tenants is None:
            raise FailedPrecondition("not configured")
        if payload != FIRST_PAYLOAD:
            raise InvalidArgument(f"the first payload is not {FIRST_PAYLOAD.decode()!r}, as an azure_imds agent sends")
        nonce = "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(NONCE_LENGTH))
        try:
            answer = AttestationPayload.from_json(challenge(nonce.encode()))
        except ValueError as err:
            raise InvalidArgument(f"failed to unmarshal data payload: {err}") from None
        try:
            document = self._verifier.verify(answer.document.signature)
        except DocumentRefused as err:
            raise InvalidArgument(f"failed to validate attested document: {err}") from None
        if not document.vm_id:
            raise InvalidArgument("missing VM ID in attested document")
        if not document.subscription_id:
            raise InvalidArgument("missing subscription ID in attested document")
        if not secrets.compare_digest(document.nonce, nonce):
            raise InvalidArgument("nonce mismatch")
        try:
            uuid.UUID(document.vm_id)
        except ValueError:
            raise InvalidArgument(f'invalid VM ID: invalid UUID format: "{document.vm_id}"') from None
        tenant = self._tenants.get(answer.agent_domain)
        if tenant is None:
            raise PermissionDenied(f'tenant "{answer.agent_domain}" is not authorized')
        if tenant.subscriptions and document.subscription_id not in tenant.subscriptions:
            raise PermissionDenied(f'subscription "{document.subscription_id}" is not authorized')
        path = self._template.render(
            {
                "PluginName": PLUGIN_NAME,
                "TenantID": tenant.tenant_id,
                "SubscriptionID": document.subscription_id,
                "VMID": document.vm_id,
                "Nonce": document.nonce,
            }
        )
        if answer.vmss_name is None:
            vm = tenant.resources.virtual_machine(document.vm_id, document.subscription_id)
        else:
            vm = tenant.resources.scale_set_instance(document.vm_id, document.subscription_id, answer.vmss_name)
        values = _selectors(vm, document.subscription_id, tenant.allowed_tags)
        if answer.vmss_name is not None:
            values = tuple(sorted((*values, f"vmss-name:{answer.vmss_name}")))
        return AttestationResult(path, values, can_reattest=False)
