"""The ``plugins {}`` block: which plugin of which type, with which ``plugin_data``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspire.config.reader import read_config_file, strip_markers
from pyspire.config.schema import ConfigError
from pyspire.plugin.types import plugin_types

__all__ = [
    "AGENT_PLUGIN_TYPES",
    "SERVER_PLUGIN_TYPES",
    "PluginDeclaration",
    "parse_plugins_block",
    "reread_plugin_data",
]

SERVER_PLUGIN_TYPES = tuple(sorted(plugin_types("server")))
AGENT_PLUGIN_TYPES = tuple(sorted(plugin_types("agent")))

_DECLARATION_KEYS = ("plugin_data", "plugin_data_file", "enabled", "plugin_cmd", "plugin_checksum")


@dataclass(frozen=True)
class PluginDeclaration:
    """One ``Type "name" { ... }`` declaration, as written (plugin_data is checked later).

    ``where`` locates it for messages: ``server.conf: plugins: NodeAttestor "x509pop"``.
    """

    type: str
    name: str
    plugin_data: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    where: str = ""
    data_file: Path | None = None
    """``plugin_data_file``, when the data came from one (SIGUSR1 reads it again)."""


def _items(value: Any, where: str) -> list[tuple[str, Any]]:
    """``{label: body}`` items from HCL's list-of-occurrences or JSON's object/list."""
    occurrences = value if isinstance(value, list) else [value]
    items: list[tuple[str, Any]] = []
    for occurrence in occurrences:
        if not isinstance(occurrence, Mapping):
            raise ConfigError(where, None, 'expected declarations of the form Type "name" { ... }')
        items.extend((label, body) for label, body in occurrence.items() if label != "__is_block__")
    return items


def _body(value: Any, where: str) -> Mapping[str, Any]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Mapping):
        raise ConfigError(where, None, "expected a block { ... }")
    return value


def _declaration(type_name: str, name: str, raw_body: Any, source: str) -> PluginDeclaration:
    where = f'{source}: plugins: {type_name} "{name}"'
    body = _body(raw_body, where)
    unknown = sorted(key for key in body if key not in _DECLARATION_KEYS and key != "__is_block__")
    if unknown:
        raise ConfigError(where, unknown[0], f"unknown key (known keys: {', '.join(_DECLARATION_KEYS)})")
    for key in ("plugin_cmd", "plugin_checksum"):
        if key in body:
            raise ConfigError(
                where,
                key,
                "external plugin binaries are not supported: pyspire loads plugins from "
                'Python packages (entry points in group "pyspire.server" / "pyspire.agent"); '
                "install the plugin's package and remove plugin_cmd",
            )
    if "plugin_data" in body and "plugin_data_file" in body:
        raise ConfigError(where, "plugin_data_file", "plugin_data and plugin_data_file are mutually exclusive")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(where, "enabled", f"expected true or false, got {enabled!r}")
    if "plugin_data_file" in body:
        path = body["plugin_data_file"]
        if not isinstance(path, str) or not path:
            raise ConfigError(where, "plugin_data_file", "expected a file path")
        data_file: Path | None = Path(path)
        plugin_data: Any = read_config_file(Path(path))
    else:
        data_file = None
        plugin_data = body.get("plugin_data", {})
    if isinstance(plugin_data, list) and len(plugin_data) == 1:
        plugin_data = plugin_data[0]
    if not isinstance(plugin_data, Mapping):
        raise ConfigError(where, "plugin_data", "expected a block { ... }")
    return PluginDeclaration(type_name, name, strip_markers(dict(plugin_data)), enabled, where, data_file)


def reread_plugin_data(declaration: PluginDeclaration) -> Mapping[str, Any]:
    """The declaration's ``plugin_data_file`` as it reads now (ConfigError when it cannot be read)."""
    assert declaration.data_file is not None
    plugin_data: Any = read_config_file(declaration.data_file)
    if isinstance(plugin_data, list) and len(plugin_data) == 1:
        plugin_data = plugin_data[0]
    if not isinstance(plugin_data, Mapping):
        raise ConfigError(declaration.where, "plugin_data_file", "expected a block { ... }")
    return strip_markers(dict(plugin_data))  # type: ignore[no-any-return]


def parse_plugins_block(raw: Any, types: Sequence[str], source: str) -> tuple[PluginDeclaration, ...]:
    """Every declaration in a ``plugins`` block; unknown plugin types are errors."""
    where = f"{source}: plugins"
    if raw is None:
        return ()
    block = _body(raw, where)
    declarations: list[PluginDeclaration] = []
    for type_name, value in block.items():
        if type_name == "__is_block__":
            continue
        if type_name not in types:
            raise ConfigError(where, type_name, f"unknown plugin type (known: {', '.join(types)})")
        seen: set[str] = set()
        for name, body in _items(value, f"{where}: {type_name}"):
            if name in seen:
                raise ConfigError(where, type_name, f'"{name}" is declared twice')
            seen.add(name)
            declarations.append(_declaration(type_name, name, body, source))
    return tuple(declarations)
