"""Configuration: SPIRE's HCL (or JSON) config files, parsed once into typed objects.

Nothing past this package sees raw dicts: the daemons get :class:`ServerConfig` /
:class:`AgentConfig`, plugins get their ``plugin_data`` through
:func:`pyspire.plugin.parse_plugin_data`, and every mistake is a :class:`ConfigError` that
names the file, the block and the key.
"""

from pyspire.config.daemon_config import (
    AgentConfig,
    ServerConfig,
    load_agent_config,
    load_agent_config_text,
    load_server_config,
    load_server_config_text,
)
from pyspire.config.duration import format_duration, parse_duration
from pyspire.config.plugins import PluginDeclaration
from pyspire.config.schema import ConfigError, load_section

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
