"""Finding plugin classes: installed entry points, and plugins under development.

A plugin is found by its entry point in the group ``pyspire.server`` or ``pyspire.agent``
whose name is the name used in config. Where one name serves two types in one group (the
server's ``disk`` KeyManager and ``disk`` UpstreamAuthority) the entry points are qualified,
``KeyManager.disk``, and the qualified form is looked for first.

Two distributions registering the same name in the same group are refused when that name
is selected, naming both: which one would win depends on the order of ``sys.path``, and
an operator must not get a different plugin by reinstalling a package.

``PYSPIRE_DEV_PLUGINS`` adds plugins that are not packaged, for development::

    PYSPIRE_DEV_PLUGINS="server:acme=./acme_server.py:AcmeAttestor agent:acme=acme_agent:AcmeAgent"

Each entry is ``<role>:<name>=<target>``; the target is ``module:Class`` (imported from
``sys.path``, e.g. with ``PYTHONPATH=.``) or ``path/to/file.py:Class``. Entries are separated
by commas or whitespace. Nothing is imported until a config selects the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pyspire.plugin.errors import CatalogError
from pyspire.plugin.types import ROLES, Role, entry_point_group, plugin_types

__all__ = [
    "DEV_PLUGINS_ENV",
    "PluginSource",
    "find_plugin",
    "installed_sources",
]

DEV_PLUGINS_ENV = "PYSPIRE_DEV_PLUGINS"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin class comes from: an entry point of a distribution, or a dev entry."""

    role: Role
    name: str
    """The registered name, qualified (``KeyManager.disk``) or not (``aws_iid``)."""
    target: str
    """``module:Class``, or ``path.py:Class`` for a development plugin."""
    distribution: str
    """The distribution's name, or ``PYSPIRE_DEV_PLUGINS`` for a development plugin."""
    version: str

    @property
    def plugin_name(self) -> str:
        """The name used in config (the qualifier removed)."""
        return self.name.partition(".")[2] if self.qualifier else self.name

    @property
    def qualifier(self) -> str | None:
        """The plugin type a qualified name names, else None."""
        head, dot, _ = self.name.partition(".")
        return head if dot and head in plugin_types(self.role) else None

    @property
    def development(self) -> bool:
        """Whether the source is a ``PYSPIRE_DEV_PLUGINS`` entry."""
        return self.distribution == DEV_PLUGINS_ENV

    def describe(self) -> str:
        """``pyspire-aws-iid 0.1.0 (pyspire_aws_iid.server:ServerAwsIid)``."""
        return " ".join(part for part in (self.distribution, self.version, f"({self.target})") if part)

    def load(self) -> type:
        """Import the class; a CatalogError names the target and what failed."""
        module_name, colon, attribute = self.target.rpartition(":")
        if not colon or not module_name or not attribute:
            raise CatalogError(f"{self.name} = {self.target}: expected module:Class")
        try:
            module = _load_file(Path(module_name)) if _is_path(module_name) else importlib.import_module(module_name)
            loaded = getattr(module, attribute)
        except Exception as err:
            raise CatalogError(
                f"cannot import {self.target} ({self.describe_origin()}): {type(err).__name__}: {err}"
            ) from err
        if not isinstance(loaded, type):
            raise CatalogError(f"{self.name} = {self.target} ({self.describe_origin()}) is not a class")
        return loaded

    def describe_origin(self) -> str:
        """``distribution pyspire-aws-iid 0.1.0`` or ``PYSPIRE_DEV_PLUGINS``."""
        return DEV_PLUGINS_ENV if self.development else f"distribution {self.distribution} {self.version}"


def _is_path(module_name: str) -> bool:
    return module_name.endswith(".py") or "/" in module_name


def _load_file(path: Path) -> object:
    """Import a development plugin's file once, as module ``pyspire_dev_<stem>``."""
    resolved = path.resolve()
    name = "pyspire_dev_" + re.sub(r"\W", "_", resolved.stem)
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(resolved):
        return existing
    if not resolved.is_file():
        raise FileNotFoundError(f"no such file: {resolved}")
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"{resolved} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _dev_sources(environ: Mapping[str, str]) -> list[PluginSource]:
    text = environ.get(DEV_PLUGINS_ENV, "")
    sources = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        role, colon, rest = entry.partition(":")
        name, equals, target = rest.partition("=")
        if not colon or not equals or role not in ROLES or not name or ":" not in target:
            raise CatalogError(
                f'{DEV_PLUGINS_ENV}: "{entry}" is not of the form <role>:<name>=<module or file.py>:<Class> '
                '(role "server" or "agent"), e.g. "agent:acme=./acme.py:AcmeAttestor"'
            )
        sources.append(PluginSource(role, name, target, DEV_PLUGINS_ENV, ""))
    return sources


def installed_sources(role: Role, environ: Mapping[str, str] | None = None) -> list[PluginSource]:
    """Every plugin source for ``role``: entry points and development entries, by name.

    A distribution found twice on ``sys.path`` (the same name, version and target) counts
    once; two different distributions with one name are both listed.
    """
    seen: set[tuple[str, str, str]] = set()
    sources = []
    for entry_point in metadata.entry_points(group=entry_point_group(role)):
        dist = entry_point.dist
        source = PluginSource(
            role,
            entry_point.name,
            entry_point.value,
            dist.name if dist is not None else "?",
            dist.version if dist is not None else "",
        )
        key = (source.name, source.distribution, source.target)
        if key not in seen:
            seen.add(key)
            sources.append(source)
    sources.extend(source for source in _dev_sources(os.environ if environ is None else environ) if source.role == role)
    return sorted(sources, key=lambda source: (source.plugin_name, source.name, source.distribution))


def _duplicate_message(role: Role, name: str, sources: Iterable[PluginSource]) -> str:
    listed = " and ".join(source.describe() for source in sources)
    return (
        f'two plugins register the name "{name}" in group "{entry_point_group(role)}": {listed}; '
        "pyspire does not guess which one is meant. Uninstall one of them (pip uninstall "
        f"<distribution>) or give the development entry in {DEV_PLUGINS_ENV} another name"
    )


def find_plugin(role: Role, type_name: str, name: str, environ: Mapping[str, str] | None = None) -> PluginSource:
    """The one source of plugin ``name`` of type ``type_name``; CatalogError if none or two."""
    sources = installed_sources(role, environ)
    for candidate in (f"{type_name}.{name}", name):
        matching = [source for source in sources if source.name == candidate]
        if len(matching) > 1:
            raise CatalogError(_duplicate_message(role, candidate, matching))
        if matching:
            return matching[0]
    names = sorted({source.name for source in sources})
    raise CatalogError(
        f'no {type_name} plugin named "{name}" is installed. Installed {role} plugins: '
        f"{', '.join(names) or 'none'}. A plugin is a Python distribution with an entry point in "
        f'group "{entry_point_group(role)}" (or, for development, an entry in {DEV_PLUGINS_ENV}).'
    )
