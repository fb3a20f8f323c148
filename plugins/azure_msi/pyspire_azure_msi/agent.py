"""The agent side of ``azure_msi``: the managed identity's access token, from IMDS.

``GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<resource_id>`` with the
``Metadata: true`` header; the payload is ``{"token": "<access_token>"}``, as SPIRE's agent sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, Internal, PluginConfigError
from pyspire_azure_common import imds

from pyspire_azure_msi.protocol import DEFAULT_RESOURCE_ID, write_payload

__all__ = ["AgentAzureMsi", "AgentAzureMsiConfig"]

TOKEN_API_VERSION = "2018-02-01"  # noqa: S105 - an API version, not a secret


@dataclass(frozen=True)
class AgentAzureMsiConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "azure_msi"``."""

    resource_id: str = DEFAULT_RESOURCE_ID
    imds_host: str = imds.DEFAULT_HOST
    """pyspire's addition (SPIRE's address is fixed): where IMDS answers, for tests and proxies."""


class AgentAzureMsi:
    """Sends this VM's managed identity token."""

    def __init__(self) -> None:
        self._config: AgentAzureMsiConfig | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentAzureMsiConfig, plugin_data)
        if not config.resource_id:
            raise PluginConfigError("resource_id", "must not be empty")
        imds.check_host(config.imds_host)
        self._config = config

    @hookimpl
    def attestation_payload(self) -> bytes:
        if self._config is None:
            raise FailedPrecondition("not configured")
        query = {"api-version": TOKEN_API_VERSION, "resource": self._config.resource_id}
        answer = imds.get_json(self._config.imds_host, "/metadata/identity/oauth2/token", query)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise Internal("unable to fetch token: response missing access token")
        return write_payload(token)
