"""The plugin starter behind ``pyspire-server plugins new`` and ``pyspire-agent plugins new``.

It writes a complete, working plugin distribution for one plugin type: ``pyproject.toml``
with the entry points, a README in the shape of SPIRE's plugin pages, the plugin itself (a
small but real implementation of every required hook) and tests that run the type's
contract suite. ``pip install -e <dir>[test] && pytest <dir>`` passes as generated; the
integrator then replaces the example logic with theirs, keeping the tests green.

The templates live beside this module, one folder per type (``KeyManager`` has a server and
an agent flavour), and are plain files with ``{{placeholders}}``; they ship with the core,
so a starter always matches the hook specifications of the pyspire that writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pyspire.plugin.discovery import installed_sources
from pyspire.plugin.types import Role, plugin_type, plugin_types

__all__ = ["STARTERS", "Starter", "StarterError", "Written", "render_starter", "write_starter"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
"""Plugin names: SPIRE's are short (``aws_iid``); 30 characters keep generated lines readable."""
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class StarterError(Exception):
    """The starter cannot be written: a bad name, an existing folder, an unknown type."""


@dataclass(frozen=True)
class Starter:
    """What one type's template provides: its folder and its entry points."""

    folder: str
    entry_points: tuple[tuple[Role, str, str], ...]
    """(role, module, class suffix): ``("server", "server", "Attestor")`` registers
    ``<name> = "<package>.server:<Name>Attestor"`` in ``pyspire.server``."""


STARTERS: dict[tuple[Role, str], Starter] = {
    ("server", "NodeAttestor"): Starter(
        "NodeAttestor", (("server", "server", "ServerAttestor"), ("agent", "agent", "AgentAttestor"))
    ),
    ("agent", "NodeAttestor"): Starter(
        "NodeAttestor", (("server", "server", "ServerAttestor"), ("agent", "agent", "AgentAttestor"))
    ),
    ("agent", "WorkloadAttestor"): Starter("WorkloadAttestor", (("agent", "agent", "WorkloadAttestor"),)),
    ("server", "KeyManager"): Starter("KeyManager.server", (("server", "server", "KeyManager"),)),
    ("agent", "KeyManager"): Starter("KeyManager.agent", (("agent", "agent", "KeyManager"),)),
    ("server", "DataStore"): Starter("DataStore", (("server", "server", "DataStore"),)),
    ("server", "UpstreamAuthority"): Starter("UpstreamAuthority", (("server", "server", "UpstreamAuthority"),)),
    ("server", "Notifier"): Starter("Notifier", (("server", "server", "Notifier"),)),
    ("server", "BundlePublisher"): Starter("BundlePublisher", (("server", "server", "BundlePublisher"),)),
    ("server", "CredentialComposer"): Starter("CredentialComposer", (("server", "server", "CredentialComposer"),)),
    ("agent", "SVIDStore"): Starter("SVIDStore", (("agent", "agent", "SvidStore"),)),
}


@dataclass(frozen=True)
class Written:
    """The package the starter wrote."""

    root: Path
    files: tuple[Path, ...]
    next_steps: str


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _render(text: str, values: dict[str, str], source: str) -> str:
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise StarterError(f"template {source}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(value, text)


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found = []
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        relative = f"{prefix}{item.name}"
        if item.is_dir():
            found.extend(_files(item, relative + "/"))
        elif item.name.endswith(".tmpl"):
            found.append((relative.removesuffix(".tmpl"), item))
    return found


def _entry_points(starter: Starter, name: str, package: str, camel: str) -> str:
    groups: dict[str, list[str]] = {}
    for role, module, suffix in starter.entry_points:
        groups.setdefault(role, []).append(f'{name} = "{package}.{module}:{camel}{suffix}"')
    return "\n\n".join(
        f'[project.entry-points."pyspire.{role}"]\n' + "\n".join(lines) for role, lines in groups.items()
    )


def _check_installed(type_name: str, name: str, starter: Starter) -> None:
    for plugin_role, _, _ in starter.entry_points:
        for source in installed_sources(plugin_role):
            if source.name in (name, f"{type_name}.{name}"):
                article = "an" if plugin_role == "agent" else "a"
                raise StarterError(
                    f'{article} {plugin_role} plugin named "{name}" is installed already ({source.describe()}); '
                    "choose another name (the catalog refuses two plugins with one name)"
                )


def render_starter(role: Role, type_name: str, name: str, distribution: str = "") -> dict[str, str]:
    """The files of a starter package, by path relative to its folder (nothing is written)."""
    if plugin_type(role, type_name) is None:
        other: Role = "agent" if role == "server" else "server"
        hint = (
            f"; {type_name} is an {other} plugin: use pyspire-{other} plugins new"
            if plugin_type(other, type_name)
            else ""
        )
        raise StarterError(f'unknown {role} plugin type "{type_name}" (known: {", ".join(plugin_types(role))}){hint}')
    if not _NAME.match(name):
        raise StarterError(
            f'"{name}" is not a plugin name: up to 30 lower-case letters, digits and underscores, from a letter'
        )
    starter = STARTERS[(role, type_name)]
    package = f"pyspire_{name}"
    camel = _camel(name)
    values = {
        "name": name,
        "Name": camel,
        "package": package,
        "distribution": distribution or f"pyspire-{name.replace('_', '-')}",
        "type": type_name,
        "entry_points": _entry_points(starter, name, package, camel),
    }
    templates = resources.files(__name__)
    rendered = {}
    for relative, source in _files(templates / "common") + _files(templates / starter.folder):
        path = _render(relative.replace("package/", f"{package}/"), values, relative)
        rendered[path] = _render(source.read_text(encoding="utf-8"), values, relative)
    return rendered


def write_starter(role: Role, type_name: str, name: str, directory: Path, *, distribution: str = "") -> Written:
    """Write a new plugin package for ``type_name`` called ``name`` into ``directory``."""
    files = render_starter(role, type_name, name, distribution)
    _check_installed(type_name, name, STARTERS[(role, type_name)])
    root = directory / (distribution or f"pyspire-{name.replace('_', '-')}")
    if root.exists():
        raise StarterError(f"{root} exists already: choose another -dir or -distribution")
    written = []
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    next_steps = (
        f"Next: pip install -e '{root}[test]' && pytest {root}\n"
        f'Then declare it: {type_name} "{name}" {{ plugin_data {{ ... }} }} and check with '
        f"pyspire-{role} plugins -config <file>."
    )
    return Written(root, tuple(written), next_steps)
