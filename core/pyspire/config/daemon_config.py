"""Whole config files for the two daemons: ``server.conf`` and ``agent.conf``."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyspire.config.duration import format_duration
from pyspire.config.plugins import (
    AGENT_PLUGIN_TYPES,
    SERVER_PLUGIN_TYPES,
    PluginDeclaration,
    parse_plugins_block,
)
from pyspire.config.reader import parse_config_text, read_config_file
from pyspire.config.schema import ConfigError, load_section
from pyspire.config.sections import AgentSection, HealthChecks, ServerSection, Telemetry
from pyspire.config.support import (
    AGENT_UNSUPPORTED,
    SERVER_UNSUPPORTED,
    Rule,
    apply_support_table,
)

__all__ = [
    "AgentConfig",
    "ServerConfig",
    "load_agent_config",
    "load_agent_config_text",
    "load_server_config",
    "load_server_config_text",
]

S = TypeVar("S")


@dataclass(frozen=True)
class ServerConfig:
    """A parsed and validated ``server.conf``."""

    server: ServerSection
    plugins: tuple[PluginDeclaration, ...]
    health_checks: HealthChecks
    telemetry: Telemetry
    source: Path | None
    warnings: tuple[str, ...]
    """Settings that were ignored (see :mod:`pyspire.config.support`); the daemon logs them."""


@dataclass(frozen=True)
class AgentConfig:
    """A parsed and validated ``agent.conf``."""

    agent: AgentSection
    plugins: tuple[PluginDeclaration, ...]
    health_checks: HealthChecks
    telemetry: Telemetry
    source: Path | None
    warnings: tuple[str, ...]


def _block(document: Mapping[str, Any], key: str, source: str) -> MutableMapping[str, Any]:
    value = document.get(key, {})
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        raise ConfigError(source, key, f"block given {len(value)} times; give it once")
    if not isinstance(value, MutableMapping):
        raise ConfigError(source, key, "expected a block { ... }")
    return value


def _load(  # noqa: PLR0917 - one private call site per daemon
    document: dict[str, Any],
    section: str,
    section_class: type[S],
    plugin_types: tuple[str, ...],
    table: Mapping[str, Rule],
    source: str,
    overrides: Mapping[str, Any],
) -> tuple[S, tuple[PluginDeclaration, ...], HealthChecks, Telemetry, tuple[str, ...]]:
    known = (section, "plugins", "health_checks", "telemetry")
    if section not in document:
        other = "agent" if section == "server" else "server"
        hint = f" (this looks like an {other} config)" if other in document else ""
        raise ConfigError(source, None, f"the {section} {{ ... }} block is missing{hint}")
    for key in document:
        if key not in known:
            raise ConfigError(source, key, f"unknown top-level block (known: {', '.join(known)})")
    # A flag is judged as the same key in the file would be (refused, ignored with a warning...).
    _block(document, section, source).update({key: value for key, value in overrides.items() if value is not None})
    warnings = apply_support_table(document, section, table, source)
    raw_section = dict(_block(document, section, source))
    typed = load_section(section_class, raw_section, where=f"{source}: {section}")
    health = load_section(HealthChecks, _block(document, "health_checks", source), where=f"{source}: health_checks")
    telemetry = load_section(Telemetry, _block(document, "telemetry", source), where=f"{source}: telemetry")
    plugins = parse_plugins_block(document.get("plugins"), plugin_types, source)
    return typed, plugins, health, telemetry, tuple(warnings)


def _server(document: dict[str, Any], source: str, path: Path | None, overrides: Mapping[str, Any]) -> ServerConfig:
    server, plugins, health, telemetry, warnings = _load(
        document,
        "server",
        ServerSection,
        SERVER_PLUGIN_TYPES,
        SERVER_UNSUPPORTED,
        source,
        overrides,
    )
    if server.default_x509_svid_ttl > server.ca_ttl / 6:
        warnings += (
            f'{source}: "default_x509_svid_ttl" ({format_duration(server.default_x509_svid_ttl)}) is more than a '
            f'sixth of "ca_ttl" ({format_duration(server.ca_ttl)}): SVIDs will be cut short at CA rotation',
        )
    return ServerConfig(server, plugins, health, telemetry, path, warnings)


def _agent(document: dict[str, Any], source: str, path: Path | None, overrides: Mapping[str, Any]) -> AgentConfig:
    agent, plugins, health, telemetry, warnings = _load(
        document, "agent", AgentSection, AGENT_PLUGIN_TYPES, AGENT_UNSUPPORTED, source, overrides
    )
    if agent.experimental.use_sync_authorized_entries is not None:
        # SPIRE's own warning: the key goes away in SPIRE 1.13.
        warnings += (
            f'{source}: "agent.experimental.use_sync_authorized_entries" is deprecated; the option '
            "to disable it will be removed in SPIRE 1.13",
        )
    return AgentConfig(agent, plugins, health, telemetry, path, warnings)


def load_server_config(
    path: Path, *, expand_env: bool = False, overrides: Mapping[str, Any] | None = None
) -> ServerConfig:
    """Read, parse and validate a server config file (HCL or JSON).

    ``overrides`` are ``server {}`` keys given on the command line (``-trustDomain`` is
    ``{"trust_domain": ...}``); they replace the file's values and are validated the same way.
    """
    document = read_config_file(path, expand_environment=expand_env)
    return _server(document, path.name, path, overrides or {})


def load_agent_config(
    path: Path, *, expand_env: bool = False, overrides: Mapping[str, Any] | None = None
) -> AgentConfig:
    """Read, parse and validate an agent config file (HCL or JSON)."""
    document = read_config_file(path, expand_environment=expand_env)
    return _agent(document, path.name, path, overrides or {})


def load_server_config_text(
    text: str, *, source: str = "server.conf", overrides: Mapping[str, Any] | None = None
) -> ServerConfig:
    """Parse a server config from a string (tools and tests)."""
    return _server(parse_config_text(text, source), source, None, overrides or {})


def load_agent_config_text(
    text: str, *, source: str = "agent.conf", overrides: Mapping[str, Any] | None = None
) -> AgentConfig:
    """Parse an agent config from a string (tools and tests)."""
    return _agent(parse_config_text(text, source), source, None, overrides or {})
