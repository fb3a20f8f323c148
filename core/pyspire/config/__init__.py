"""Configuration: SPIRE's HCL (or JSON) config files, parsed once into typed objects.

Nothing past this package sees raw dicts: the daemons get :class:`ServerConfig` /
:class:`AgentConfig`, plugins get their ``plugin_data`` through
:func:`pyspire.plugin.parse_plugin_data`, and every mistake is a :class:`ConfigError` that
names the file, the block and the key.

The names below are imported when first used: a CLI that only needs
:mod:`pyspire.config.duration` (every ``entry``, ``agent`` or ``bundle`` call) would otherwise
load the whole schema, the plugin catalogue and the workload library they declare, a third of
its start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspire.config.daemon_config import (
        AgentConfig,
        ServerConfig,
        load_agent_config,
        load_agent_config_text,
        load_server_config,
        load_server_config_text,
    )
    from pyspire.config.duration import format_duration, parse_duration
    from pyspire.config.errors import ConfigError
    from pyspire.config.plugins import PluginDeclaration
    from pyspire.config.schema import load_section

_HOMES = {
    "AgentConfig": "daemon_config",
    "ServerConfig": "daemon_config",
    "load_agent_config": "daemon_config",
    "load_agent_config_text": "daemon_config",
    "load_server_config": "daemon_config",
    "load_server_config_text": "daemon_config",
    "format_duration": "duration",
    "parse_duration": "duration",
    "PluginDeclaration": "plugins",
    "ConfigError": "errors",
    "load_section": "schema",
}

__all__ = [
    "AgentConfig",
    "ConfigError",
    "PluginDeclaration",
    "ServerConfig",
    "format_duration",
    "load_agent_config",
    "load_agent_config_text",
    "load_section",
    "load_server_config",
    "load_server_config_text",
    "parse_duration",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
