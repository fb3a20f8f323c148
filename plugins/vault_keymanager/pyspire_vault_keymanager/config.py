"""``plugin_data`` of ``KeyManager "hashicorp_vault"``: SPIRE's keys, checked at configure time.

The Vault connection keys (``vault_addr``, ``namespace``, ``ca_cert_path``,
``insecure_skip_verify`` and the four auth blocks) and their environment fallbacks are the
vault UpstreamAuthority's, read by its :func:`~pyspire_vault_upstream.config.load_settings`.
This key manager adds where its keys live (``transit_engine_path``, or
``VAULT_TRANSIT_ENGINE_PATH``, or ``transit``) and whose keys they are: the server ID of
``key_identifier_value``, or the UUID kept in ``key_identifier_file``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import PluginConfigError, parse_plugin_data
from pyspire.plugin.server_id import server_id_from_file
from pyspire_vault_upstream.config import VaultConnectionData, VaultSettings, load_settings

__all__ = ["KeyManagerSettings", "load_key_manager_settings", "server_id"]

DEFAULT_TRANSIT_ENGINE_PATH = "transit"
_OWN_KEYS = ("key_identifier_file", "key_identifier_value", "transit_engine_path")
VAULT_NAME = re.compile(r"\w[\w.-]*")
"""What Vault accepts as the start of a transit key name (its names are word characters, '.' and '-')."""


@dataclass(frozen=True)
class _PluginData(VaultConnectionData):
    """Every key ``plugin_data`` may hold (unknown ones are refused by name)."""

    key_identifier_file: str = ""
    key_identifier_value: str = ""
    transit_engine_path: str = ""


@dataclass(frozen=True)
class KeyManagerSettings:
    vault: VaultSettings
    transit_engine_path: str
    key_identifier_file: str
    key_identifier_value: str


def load_key_manager_settings(
    plugin_data: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> KeyManagerSettings:
    """Parse and check ``plugin_data``; raise :class:`PluginConfigError` naming the key at fault."""
    env = os.environ if environ is None else environ
    data = parse_plugin_data(_PluginData, plugin_data)
    if data.key_identifier_file and data.key_identifier_value:
        raise PluginConfigError(
            "key_identifier_value", "only one of key_identifier_file or key_identifier_value may be set"
        )
    if not (data.key_identifier_file or data.key_identifier_value):
        raise PluginConfigError("key_identifier_file", "one of key_identifier_file or key_identifier_value is required")
    if data.key_identifier_value and not VAULT_NAME.fullmatch(data.key_identifier_value):
        raise PluginConfigError(
            "key_identifier_value",
            f'"{data.key_identifier_value}" cannot start a Vault key name: use letters, digits, '
            "'_', '.' and '-', starting with a letter, digit or '_'",
        )
    transit = data.transit_engine_path or env.get("VAULT_TRANSIT_ENGINE_PATH", "") or DEFAULT_TRANSIT_ENGINE_PATH
    transit = transit.strip("/")
    if not transit:
        raise PluginConfigError("transit_engine_path", "must not be empty")
    vault = load_settings({k: v for k, v in plugin_data.items() if k not in _OWN_KEYS}, env)
    return KeyManagerSettings(vault, transit, data.key_identifier_file, data.key_identifier_value)


def server_id(settings: KeyManagerSettings) -> str:
    """``key_identifier_value``, or the file's UUID, made and kept (mode 0600) on first start."""
    return settings.key_identifier_value or server_id_from_file(settings.key_identifier_file)
