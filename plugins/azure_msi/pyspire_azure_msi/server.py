"""The server side of ``azure_msi``: Entra's token, the tenant, the audience, the VM behind the identity.

The token's signature is verified against Entra's keys before any claim is used
(:mod:`pyspire_azure_msi.token`); its tenant must be one of ``tenants`` (keyed by tenant ID),
its audience that tenant's ``resource_id``, its time current. The selectors come from Azure
Resource Manager with the tenant's app credential, or Azure's default chain in the subscription
IMDS reports for the server's own VM (SPIRE's fallback). Trust on first use is the server
core's: the result is not re-attestable, so a replayed token for an attested identity is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, InvalidArgument, PermissionDenied, PluginConfigError, PluginError
from pyspire_azure_common import imds
from pyspire_azure_common.credentials import DEFAULT_AUTHORITY, credential

from pyspire_azure_msi.protocol import DEFAULT_RESOURCE_ID, PLUGIN_NAME, read_payload
from pyspire_azure_msi.resources import DEFAULT_RESOURCE_MANAGER, ResourceManager
from pyspire_azure_msi.token import DEFAULT_OPENID_ISSUER, EntraKeys, check_claims, verified_claims

__all__ = ["ServerAzureMsi", "ServerAzureMsiConfig"]

DEFAULT_TEMPLATE = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"


@dataclass(frozen=True)
class TenantConfig:
    """One entry of ``tenants``, keyed by tenant ID."""

    resource_id: str = DEFAULT_RESOURCE_ID
    subscription_id: str = ""
    app_id: str = ""
    app_secret: str = ""


@dataclass(frozen=True)
class ServerAzureMsiConfig:
    """``plugin_data`` of the server's ``NodeAttestor "azure_msi"`` (SPIRE's keys, and four of pyspire's)."""

    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    agent_path_template: str = DEFAULT_TEMPLATE
    openid_issuer: str = DEFAULT_OPENID_ISSUER
    authority_host: str = DEFAULT_AUTHORITY
    resource_manager_endpoint: str = DEFAULT_RESOURCE_MANAGER
    imds_host: str = imds.DEFAULT_HOST


@dataclass(frozen=True)
class _Tenant:
    resource_id: str
    resources: ResourceManager


def _tenant(tenant_id: str, tenant: TenantConfig, config: ServerAzureMsiConfig) -> _Tenant:
    key = f"tenants.{tenant_id}"
    if tenant.subscription_id or tenant.app_id or tenant.app_secret:
        for name in ("subscription_id", "app_id", "app_secret"):
            if not getattr(tenant, name):
                raise PluginConfigError(f"{key}.{name}", f"misconfigured tenant: missing {name.replace('_', ' ')}")
        login = credential(tenant_id, secret=(tenant.app_id, tenant.app_secret), authority=config.authority_host)
        subscription = tenant.subscription_id
    else:
        try:
            subscription = imds.compute_metadata(imds.check_host(config.imds_host))["subscriptionId"]
        except PluginError as err:
            raise PluginConfigError(
                key, f"no app credentials, and the server's own subscription is unknown: {err}"
            ) from None
        login = credential(tenant_id, authority=config.authority_host)
    return _Tenant(
        tenant.resource_id or DEFAULT_RESOURCE_ID,
        ResourceManager(login, subscription, config.resource_manager_endpoint),
    )


class ServerAzureMsi:
    """Attests Azure VMs by their managed identity tokens."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] | None = None
        self._keys = EntraKeys()
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerAzureMsiConfig, plugin_data)
        if not config.tenants:
            raise PluginConfigError("tenants", "configuration must have at least one tenant")
        template = AgentPathTemplate(config.agent_path_template)
        tenants = {tenant_id: _tenant(tenant_id, tenant, config) for tenant_id, tenant in config.tenants.items()}
        self._template, self._keys, self._tenants = template, EntraKeys(config.openid_issuer), tenants

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        if self._tenants is None:
            raise FailedPrecondition("not configured")
        try:
            token = read_payload(payload)
        except ValueError as err:
            raise InvalidArgument(f"failed to unmarshal data payload: {err}") from None
        claims = verified_claims(token, self._keys)
        tenant = self._tenants.get(claims.tenant_id)
        if tenant is None:
            raise PermissionDenied(f'tenant "{claims.tenant_id}" is not authorized')
        check_claims(claims, tenant.resource_id)
        path = self._template.render(
            {"PluginName": PLUGIN_NAME, "TenantID": claims.tenant_id, "PrincipalID": claims.principal_id}
        )
        return AttestationResult(path, tenant.resources.selectors(claims.principal_id), can_reattest=False)
