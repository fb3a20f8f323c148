"""What the two halves of ``azure_msi`` agree on: the payload ``{"token": "<JWT>"}`` and the default resource."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DEFAULT_RESOURCE_ID", "MAX_PAYLOAD_BYTES", "PLUGIN_NAME", "read_payload", "write_payload"]

PLUGIN_NAME = "azure_msi"
DEFAULT_RESOURCE_ID = "https://management.azure.com/"
"""The audience SPIRE asks for by default: Azure Resource Manager's service ID."""
MAX_PAYLOAD_BYTES = 16 * 1024


def write_payload(token: str) -> bytes:
    return json.dumps({"token": token}).encode()


def read_payload(payload: bytes) -> str:
    """The token of an attestation payload; :class:`ValueError` says what is malformed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        raw: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    token = raw.get("token") if isinstance(raw, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("missing token from attestation data")
    return token
