"""What is installed for a daemon, by plugin type, and which of it a config selects.

The ``plugins`` commands print this. Telling a plugin's type needs its class, so every
installed plugin is imported here (unlike the daemons, which import only what the config
names); a plugin that cannot be imported is listed with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pyspire.plugin.catalog import Declaration
from pyspire.plugin.discovery import PluginSource, find_plugin, installed_sources
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.types import Role, plugin_type, plugin_types, types_of

__all__ = ["InstalledPlugin", "inventory"]


@dataclass(frozen=True)
class InstalledPlugin:
    """One plugin of one type as ``plugins`` lists it."""

    type: str
    """The plugin type, or "" when it cannot be told (see ``problem``)."""
    name: str
    """The name to write in config."""
    source: PluginSource | None
    """Where it comes from; None for a declaration that names nothing installed."""
    selected: bool
    problem: str = ""
    """Why it cannot be used: an import error, no matching hooks, a duplicate name..."""

    def as_dict(self) -> dict[str, object]:
        """The JSON form of ``plugins -output json``."""
        return {
            "type": self.type,
            "name": self.name,
            "entry_point": self.source.name if self.source else "",
            "distribution": self.source.distribution if self.source else "",
            "version": self.source.version if self.source else "",
            "target": self.source.target if self.source else "",
            "selected": self.selected,
            "problem": self.problem,
        }


def _typed(role: Role, source: PluginSource) -> tuple[list[str], str]:
    """The types ``source`` serves, and a problem if it serves none."""
    try:
        cls = source.load()
    except CatalogError as err:
        return [source.qualifier] if source.qualifier else [], str(err)
    served = [declared.name for declared in types_of(role, cls)]
    if source.qualifier:
        if source.qualifier in served:
            return [source.qualifier], ""
        return [source.qualifier], f"{source.target} does not implement the hooks of a {source.qualifier}"
    if not served:
        known = ", ".join(plugin_types(role))
        return [], f"{source.target} implements the hooks of no {role} plugin type ({known})"
    return served, ""


def inventory(role: Role, declarations: Iterable[Declaration] | None = None) -> list[InstalledPlugin]:
    """Every installed plugin of ``role`` with its type; ``selected`` for those ``declarations`` enable."""
    enabled = [d for d in declarations or () if d.enabled]
    selected: dict[tuple[str, str, str], bool] = {}
    problems: list[InstalledPlugin] = []
    for declaration in enabled:
        if plugin_type(role, declaration.type) is None:
            problems.append(InstalledPlugin(declaration.type, declaration.name, None, True, "unknown plugin type"))
            continue
        try:
            chosen = find_plugin(role, declaration.type, declaration.name)
        except CatalogError as err:
            problems.append(InstalledPlugin(declaration.type, declaration.name, None, True, str(err)))
            continue
        selected[(declaration.type, chosen.name, chosen.distribution)] = True
    rows = []
    for source in installed_sources(role):
        types, problem = _typed(role, source)
        for type_name in types or [""]:
            is_selected = selected.get((type_name, source.name, source.distribution), False)
            rows.append(InstalledPlugin(type_name, source.plugin_name, source, is_selected, problem))
    order = list(plugin_types(role))
    return sorted(
        [*rows, *problems],
        key=lambda row: (order.index(row.type) if row.type in order else len(order), row.name, row.problem),
    )


def by_type(rows: Sequence[InstalledPlugin]) -> Mapping[str, list[InstalledPlugin]]:
    """Rows grouped by type, in the types' declared order ("" last)."""
    grouped: dict[str, list[InstalledPlugin]] = {}
    for row in rows:
        grouped.setdefault(row.type, []).append(row)
    return grouped
