"""``plugin_data`` of ``KeyManager "gcp_kms"``, with SPIRE's keys and checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspire.plugin import PluginConfigError

__all__ = ["DEFAULT_ENDPOINT", "GcpKmsConfig"]

DEFAULT_ENDPOINT = "https://cloudkms.googleapis.com"

_KEY_RING = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+")
# Label values: lowercase letters, digits, '_' and '-', at most 63 characters (Cloud KMS's rule).
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{1,63}")


@dataclass(frozen=True)
class GcpKmsConfig:
    """The keys SPIRE's ``gcp_kms`` takes; ``check`` refuses what cannot work, naming the key."""

    key_ring: str = ""
    key_identifier_file: str = ""
    key_identifier_value: str = ""
    key_policy_file: str = ""
    service_account_file: str = ""
    kms_endpoint: str = DEFAULT_ENDPOINT

    def check(self) -> None:
        """Raise PluginConfigError for the first key that cannot work."""
        if not self.key_ring:
            raise PluginConfigError("key_ring", "is required")
        if not _KEY_RING.fullmatch(self.key_ring):
            raise PluginConfigError("key_ring", "must be in the format projects/*/locations/*/keyRings/*")
        if self.key_identifier_file and self.key_identifier_value:
            raise PluginConfigError(
                "key_identifier_value", "key_identifier_file and key_identifier_value exclude each other"
            )
        if not (self.key_identifier_file or self.key_identifier_value):
            raise PluginConfigError("key_identifier_file", "key_identifier_file or key_identifier_value is required")
        if self.key_identifier_value and not _LABEL_VALUE.fullmatch(self.key_identifier_value):
            # The server ID is the value of the spire-server-id label.
            raise PluginConfigError(
                "key_identifier_value",
                "must be 1 to 63 lowercase letters, digits, underscores or dashes (a Cloud KMS label value)",
            )
        if self.service_account_file and not Path(self.service_account_file).is_file():
            raise PluginConfigError("service_account_file", f"{self.service_account_file} is not a readable file")
        if not self.kms_endpoint.startswith(("https://", "http://")):
            raise PluginConfigError("kms_endpoint", "must be an http:// or https:// URL")

    def key_policy(self) -> dict[str, Any] | None:
        """The IAM policy (v3) of ``key_policy_file``, or None for the default one."""
        if not self.key_policy_file:
            return None
        try:
            policy = json.loads(Path(self.key_policy_file).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise PluginConfigError("key_policy_file", f"could not parse policy file: {err}") from None
        if not isinstance(policy, dict) or policy.get("version") != 3:
            raise PluginConfigError("key_policy_file", "must hold an IAM policy of version 3")
        return policy
