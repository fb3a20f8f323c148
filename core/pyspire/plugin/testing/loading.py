"""Loading one plugin the way the daemons do, for tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspire.plugin.catalog import Role, load_single_plugin, validate_single_plugin
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.facades import PluginHandle
from pyspire.spiffe import TrustDomain

__all__ = ["TEST_TRUST_DOMAIN", "PluginDeclaration", "load_plugin", "make_core_config", "validate_plugin"]

TEST_TRUST_DOMAIN = TrustDomain("example.org")


@dataclass(frozen=True)
class PluginDeclaration:
    """A plugin declaration built in code rather than read from a config file."""

    type: str
    name: str
    plugin_data: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    where: str = ""


def make_core_config(data_dir: Path, trust_domain: TrustDomain = TEST_TRUST_DOMAIN) -> CoreConfig:
    """Daemon settings for a plugin under test: ``example.org`` and a scratch data dir."""
    return CoreConfig(trust_domain=trust_domain, data_dir=data_dir)


def load_plugin(
    role: Role,
    plugin_type: str,
    name: str,
    plugin_data: Mapping[str, Any] | None,
    core: CoreConfig,
    *,
    plugin_class: type | None = None,
) -> PluginHandle:
    """Load and configure one plugin through the real catalog code path.

    The plugin is found by its entry point, exactly as a daemon would find it, unless
    ``plugin_class`` is given (for a plugin that is not installed yet).
    """
    declaration = PluginDeclaration(plugin_type, name, dict(plugin_data or {}))
    extra = {name: plugin_class} if plugin_class is not None else None
    return load_single_plugin(role, declaration, core, extra_plugins=extra)


def validate_plugin(
    role: Role,
    plugin_type: str,
    name: str,
    plugin_data: Mapping[str, Any] | None,
    core: CoreConfig,
    *,
    plugin_class: type | None = None,
) -> None:
    """Check one plugin's configuration as ``pyspire-server validate`` / ``pyspire-agent validate`` do.

    Through the plugin's ``validate`` hook, or ``configure`` and ``close`` for a plugin
    without one; raises :class:`~pyspire.plugin.errors.CatalogError` for a refusal.
    """
    declaration = PluginDeclaration(plugin_type, name, dict(plugin_data or {}))
    extra = {name: plugin_class} if plugin_class is not None else None
    validate_single_plugin(role, declaration, core, extra_plugins=extra)
