"""``plugin_data`` of ``KeyManager "azure_key_vault"``, with SPIRE's keys and checks."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from pyspire.plugin import PluginConfigError

__all__ = ["AzureKeyVaultConfig"]

_MAX_KEY_IDENTIFIER = 256
# SPIRE asks for the four together, in this order, when any one of them is set.
_APP_KEYS = (
    ("tenant_id", "tenant id"),
    ("subscription_id", "subscription id"),
    ("app_id", "application id"),
    ("app_secret", "app secret"),
)


@dataclass(frozen=True)
class AzureKeyVaultConfig:
    """The keys SPIRE's ``azure_key_vault`` takes; ``check`` refuses what cannot work, naming the key."""

    key_vault_uri: str = ""
    key_identifier_file: str = ""
    key_identifier_value: str = ""
    tenant_id: str = ""
    subscription_id: str = ""
    app_id: str = ""
    app_secret: str = ""
    use_msi: bool | None = None
    """Removed in SPIRE 1.10; taken only to refuse it with a reason instead of "unknown key"."""

    def check(self) -> None:
        """Raise PluginConfigError for the first key that cannot work."""
        if not self.key_vault_uri:
            raise PluginConfigError("key_vault_uri", "configuration is missing the Key Vault URI")
        url = urllib.parse.urlsplit(self.key_vault_uri)
        if url.scheme != "https" or not url.hostname:
            # The Key Vault client sends its bearer token over TLS only.
            raise PluginConfigError("key_vault_uri", f'"{self.key_vault_uri}" is not an https:// URL')
        if len(self.key_identifier_value) > _MAX_KEY_IDENTIFIER:
            raise PluginConfigError(
                "key_identifier_value", f"Key identifier must not be longer than {_MAX_KEY_IDENTIFIER} characters"
            )
        if not (self.key_identifier_file or self.key_identifier_value):
            raise PluginConfigError(
                "key_identifier_file", "configuration requires a key identifier file or a key identifier value"
            )
        if self.key_identifier_file and self.key_identifier_value:
            raise PluginConfigError(
                "key_identifier_value",
                "configuration can't have a key identifier file and a key identifier value at the same time",
            )
        if self.use_msi is not None:
            raise PluginConfigError(
                "use_msi",
                "was removed in SPIRE 1.10: without app credentials the plugin uses Azure's default "
                "credential chain, managed identity included; remove the key",
            )
        if self.app_credentials:
            for key, name in _APP_KEYS:
                if not getattr(self, key):
                    raise PluginConfigError(key, f"invalid configuration, missing {name}")

    @property
    def app_credentials(self) -> bool:
        """Whether the app registration's secret is configured (else the default credential chain is used)."""
        return any(getattr(self, key) for key, _ in _APP_KEYS)
