"""The agent side of ``azure_imds``: IMDS's attested document over the server's nonce.

The first message only asks for the challenge (SPIRE sends ``non_empty_payload``). The
challenge is the server's nonce; the agent asks IMDS for
``/metadata/attested/document?nonce=...`` and for ``/metadata/instance`` (whose
``compute.vmScaleSetName`` tells the server where to look the VM up), both with the
``Metadata: true`` header IMDS requires, and answers with the document and its tenant domain.
An unreachable IMDS is :class:`~pyspire.plugin.Unavailable`: the agent retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, Internal, InvalidArgument, PluginConfigError
from pyspire_azure_common import imds

from pyspire_azure_imds.protocol import FIRST_PAYLOAD, NONCE, AttestationPayload, AttestedDocument

__all__ = ["AgentAzureImds", "AgentAzureImdsConfig"]

DOCUMENT_API_VERSION = "2025-04-07"


@dataclass(frozen=True)
class AgentAzureImdsConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "azure_imds"``."""

    tenant_domain: str = ""
    imds_host: str = imds.DEFAULT_HOST
    """pyspire's addition (SPIRE's address is fixed): where IMDS answers, for tests and proxies."""


class AgentAzureImds:
    """Answers the server's nonce with this VM's attested document."""

    def __init__(self) -> None:
        self._config: AgentAzureImdsConfig | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentAzureImdsConfig, plugin_data)
        if not config.tenant_domain:
            raise PluginConfigError("tenant_domain", "tenant_domain is required")
        imds.check_host(config.imds_host)
        self._config = config

    @hookimpl
    def attestation_payload(self) -> bytes:
        if self._config is None:
            raise FailedPrecondition("not configured")
        return FIRST_PAYLOAD

    @hookimpl
    def answer_challenge(self, challenge: bytes) -> bytes:
        if self._config is None:
            raise FailedPrecondition("not configured")
        nonce = challenge.decode("ascii", errors="replace")
        if not NONCE.match(nonce):
            raise InvalidArgument("the challenge is not a nonce of letters and digits")
        host = self._config.imds_host
        query = {"nonce": nonce, "api-version": DOCUMENT_API_VERSION}
        document = imds.get_json(host, "/metadata/attested/document", query)
        encoding, signature = document.get("encoding"), document.get("signature")
        if not isinstance(encoding, str) or not encoding:
            raise Internal("unable to fetch attested document: response missing encoding")
        if not isinstance(signature, str) or not signature:
            raise Internal("unable to fetch attested document: response missing signature")
        vmss = imds.compute_metadata(host).get("vmScaleSetName")
        payload = AttestationPayload(
            AttestedDocument(encoding, signature),
            self._config.tenant_domain,
            vmss if isinstance(vmss, str) and vmss else None,
        )
        return payload.to_json()
