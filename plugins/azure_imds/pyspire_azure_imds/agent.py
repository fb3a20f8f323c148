"""The agent side of ``azure_imds``: IMDS's attested document over the server's nonce.

The first message only asks for the challenge (SPIRE sends ``non_empty_payload``). The
challenge is the server's nonce; the agent asks IMDS for
``/metadata/attested/document?nonce=...`` and for ``/metadata/instance`` (whose
``compute.vmScaleSetName`` tells the server where to look the VM up), both with the
``Metadata: true`` header IMDS requires, and answers with the document and its tenant domain.
An unreachable IMDS is :class:`~pyspire.plugin.Unavailable`: the agent retries.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, Internal, InvalidArgument, PluginConfigError, Unavailable

from pyspire_azure_imds.protocol import FIRST_PAYLOAD, MAX_RESPONSE_BYTES, NONCE, AttestationPayload, AttestedDocument

__all__ = ["AgentAzureImds", "AgentAzureImdsConfig"]

API_VERSION = "2025-04-07"
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class AgentAzureImdsConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "azure_imds"``."""

    tenant_domain: str = ""
    imds_host: str = "169.254.169.254"
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
        host = config.imds_host
        if not host or "/" in host or "@" in host:
            raise PluginConfigError("imds_host", f'"{host}" is not a host name (with an optional port)')
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
        document = self._get_json("/metadata/attested/document", {"nonce": nonce})
        encoding, signature = document.get("encoding"), document.get("signature")
        if not isinstance(encoding, str) or not encoding:
            raise Internal("unable to fetch attested document: response missing encoding")
        if not isinstance(signature, str) or not signature:
            raise Internal("unable to fetch attested document: response missing signature")
        compute = self._get_json("/metadata/instance", {"format": "json"}).get("compute")
        if not isinstance(compute, dict):
            raise Internal('unable to fetch compute metadata: response missing "compute"')
        for key in ("name", "subscriptionId", "resourceGroupName"):
            if not compute.get(key):
                raise Internal(f"unable to fetch compute metadata: response missing instance {key}")
        vmss = compute.get("vmScaleSetName")
        payload = AttestationPayload(
            AttestedDocument(encoding, signature),
            self._config.tenant_domain,
            vmss if isinstance(vmss, str) and vmss else None,
        )
        return payload.to_json()

    def _get_json(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        assert self._config is not None
        host = self._config.imds_host
        url = f"http://{host}{path}?{urllib.parse.urlencode({**query, 'api-version': API_VERSION})}"
        request = urllib.request.Request(url, headers={"Metadata": "true"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise Unavailable(f"IMDS answered {path} with HTTP {err.code}") from None
            raise Internal(f"IMDS refused {path} (HTTP {err.code})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise Unavailable(f"IMDS at {host} is unreachable: {reason}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise Internal(f"IMDS answered {path} with more than {MAX_RESPONSE_BYTES} bytes")
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise Internal(f"IMDS answered {path} with something other than JSON: {err}") from None
        if not isinstance(parsed, dict):
            raise Internal(f"IMDS answered {path} with something other than a JSON object")
        return parsed
