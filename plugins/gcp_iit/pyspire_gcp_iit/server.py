"""The server side of ``gcp_iit``: verify Google's token, check the project, name the node.

The token is verified before anything in it is used; the project must be on
``projectid_allow_list``; with ``use_instance_metadata`` the Compute Engine API adds tags,
and the labels and metadata the operator allowed. A failure of Google's services refuses the
node (Internal) and stores nothing. Trust on first use is the server core's: the result is
not re-attestable, so a token replayed for an attested instance is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PermissionDenied, PluginConfigError

from pyspire_gcp_iit.compute import DEFAULT_ENDPOINT, ComputeClient
from pyspire_gcp_iit.token import (
    DEFAULT_AUDIENCE,
    GOOGLE_CERTS_URL,
    PLUGIN_NAME,
    GoogleCertificates,
    IdentityToken,
    verify_token,
)

__all__ = ["ServerGcpIit"]

DEFAULT_TEMPLATE = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
DEFAULT_MAX_METADATA_VALUE_SIZE = 128


@dataclass(frozen=True)
class ServerGcpIitConfig:
    """``plugin_data`` of the server's ``NodeAttestor "gcp_iit"`` (SPIRE's keys, and three of pyspire's)."""

    projectid_allow_list: list[str] = field(default_factory=list)
    use_instance_metadata: bool = False
    service_account_file: str = ""
    allowed_label_keys: list[str] = field(default_factory=list)
    allowed_metadata_keys: list[str] = field(default_factory=list)
    max_metadata_value_size: int = DEFAULT_MAX_METADATA_VALUE_SIZE
    agent_path_template: str = DEFAULT_TEMPLATE
    audience: str = DEFAULT_AUDIENCE
    google_certs_url: str = GOOGLE_CERTS_URL
    compute_endpoint: str = DEFAULT_ENDPOINT


class ServerGcpIit:
    """Attests Compute Engine instances by their instance identity tokens."""

    def __init__(self) -> None:
        self._config = ServerGcpIitConfig()
        self._certificates = GoogleCertificates(GOOGLE_CERTS_URL)
        self._compute: ComputeClient | None = None
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerGcpIitConfig, plugin_data)
        if not config.projectid_allow_list:
            raise PluginConfigError("projectid_allow_list", "at least one project ID is required")
        if config.max_metadata_value_size <= 0:
            raise PluginConfigError("max_metadata_value_size", "must be positive")
        self._template = AgentPathTemplate(config.agent_path_template)
        self._compute = (
            ComputeClient(config.compute_endpoint, config.service_account_file)
            if config.use_instance_metadata
            else None
        )
        self._certificates = GoogleCertificates(config.google_certs_url)
        self._config = config

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        config = self._config
        token = verify_token(payload, self._certificates, config.audience)
        if token.project_id not in config.projectid_allow_list:
            raise PermissionDenied(f'identity token project ID "{token.project_id}" is not in the allow list')
        path = self._template.render(
            {
                "PluginName": PLUGIN_NAME,
                "ProjectID": token.project_id,
                "ProjectNumber": token.project_number,
                "Zone": token.zone,
                "InstanceID": token.instance_id,
                "InstanceName": token.instance_name,
                "InstanceCreationTimestamp": token.instance_creation_timestamp,
                "ServiceAccount": token.email.replace("@", "_"),
            }
        )
        values = [
            f"project-id:{token.project_id}",
            f"zone:{token.zone}",
            f"instance-name:{token.instance_name}",
        ]
        if token.email:
            values.append(f"sa:{token.email}")
        if self._compute is not None:
            values.extend(self._instance_selectors(token))
        return AttestationResult(path, tuple(values), can_reattest=False)

    def _instance_selectors(self, token: IdentityToken) -> list[str]:
        assert self._compute is not None
        config = self._config
        instance = self._compute.instance(token.project_id, token.zone, token.instance_id)
        if str(instance.get("id", "")) != token.instance_id:
            raise Internal(f"the Compute Engine API answered for another instance than {token.instance_id}")
        values = [f"tag:{tag}" for tag in instance.get("tags", {}).get("items", []) if isinstance(tag, str)]
        labels = instance.get("labels", {})
        values.extend(f"label:{key}:{labels[key]}" for key in sorted(labels) if key in config.allowed_label_keys)
        for item in instance.get("metadata", {}).get("items", []):
            key = item.get("key")
            if key not in config.allowed_metadata_keys:
                continue
            value = item.get("value") or ""
            if len(value) > config.max_metadata_value_size:
                raise Internal(
                    f'metadata "{key}" exceeded value limit ({len(value)} > {config.max_metadata_value_size})'
                )
            values.append(f"metadata:{key}:{value}")
        return values
