"""What the two halves of ``azure_imds`` exchange: the challenge response's JSON, as SPIRE's.

``{"document": {"encoding": "pkcs7", "signature": "<base64>"}, "metadata": {"agentDomain":
"<tenant domain>", "vmssName": "<name>" | null}}``. The metadata is the agent's say-so: it
only points the server at a tenant and a scale set; the document is what is trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIRST_PAYLOAD",
    "MAX_RESPONSE_BYTES",
    "NONCE",
    "PLUGIN_NAME",
    "AttestationPayload",
    "AttestedDocument",
]

PLUGIN_NAME = "azure_imds"
MAX_RESPONSE_BYTES = 64 * 1024
"""An attested document is a few KiB (the content and one certificate); more is refused."""
FIRST_PAYLOAD = b"non_empty_payload"
"""What SPIRE's agent sends to ask for the challenge; the server takes nothing else."""
NONCE = re.compile(r"^[A-Za-z0-9]{1,64}$")
"""The challenge: SPIRE's server sends 32 letters and digits; IMDS takes nonces of up to 32 characters."""


@dataclass(frozen=True)
class AttestedDocument:
    """IMDS's answer to ``/metadata/attested/document``."""

    encoding: str
    signature: str


@dataclass(frozen=True)
class AttestationPayload:
    """The challenge response: the signed document and the agent's untrusted hints."""

    document: AttestedDocument
    agent_domain: str
    vmss_name: str | None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "document": {"encoding": self.document.encoding, "signature": self.document.signature},
                "metadata": {"agentDomain": self.agent_domain, "vmssName": self.vmss_name},
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AttestationPayload:
        """Parse a challenge response; :class:`ValueError` says what is malformed."""
        if len(data) > MAX_RESPONSE_BYTES:
            raise ValueError(f"larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            raw: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        document = raw.get("document")
        metadata = raw.get("metadata") or {}
        if not isinstance(document, dict) or not isinstance(metadata, dict):
            raise ValueError('"document" and "metadata" must be objects')
        encoding, signature = document.get("encoding", ""), document.get("signature", "")
        domain, vmss = metadata.get("agentDomain", ""), metadata.get("vmssName")
        if not isinstance(encoding, str) or not isinstance(signature, str) or not isinstance(domain, str):
            raise ValueError('"encoding", "signature" and "agentDomain" must be strings')
        if vmss is not None and not isinstance(vmss, str):
            raise ValueError('"vmssName" must be a string or null')
        return cls(AttestedDocument(encoding, signature), domain, vmss)
