"""``pyspire-server plugins`` and ``pyspire-agent plugins``: what is installed, and a starter.

``plugins`` lists the installed plugins by type with their distribution and version;
``-config`` marks those the file selects and fails (exit 1) when one of them cannot be used.
``plugins new <Type> <name>`` writes a new plugin package (see :mod:`pyspire.plugin.starter`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pyspire.command_line import EXIT_ERROR, CliError
from pyspire.config.errors import ConfigError
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.types import Role, plugin_types

if TYPE_CHECKING:
    from pyspire.plugin.inventory import InstalledPlugin

# The inventory (entry-point discovery, importlib.metadata) is imported by the verb that uses
# it: registering ``plugins`` happens in every CLI call, ``entry show`` included.

__all__ = ["register"]


class _Config(Protocol):
    @property
    def plugins(self) -> tuple[Any, ...]: ...


ConfigLoader = Callable[[Path, bool], _Config]


def _origin(row: InstalledPlugin) -> str:
    if row.source is None:
        return "(not installed)"
    version = f" {row.source.version}" if row.source.version else ""
    return f"{row.source.distribution}{version}"


def _print_pretty(role: Role, rows: list[InstalledPlugin], config: str | None) -> None:
    from pyspire.plugin.discovery import DEV_PLUGINS_ENV  # noqa: PLC0415 - see above
    from pyspire.plugin.inventory import by_type  # noqa: PLC0415

    heading = f"Installed {role} plugins"
    print(f"{heading} (* = selected by {config}):" if config else f"{heading}:")
    width_name = max((len(row.name) for row in rows), default=4)
    width_origin = max((len(_origin(row)) for row in rows), default=4)
    for type_name, group in by_type(rows).items():
        print()
        print(type_name or "Unusable (no plugin type)")
        for row in group:
            marker = "*" if row.selected else " "
            target = row.source.target if row.source else ""
            qualified = f"  [entry point {row.source.name}]" if row.source and row.source.qualifier else ""
            print(f"  {marker} {row.name:<{width_name}}  {_origin(row):<{width_origin}}  {target}{qualified}".rstrip())
            if row.problem:
                print(f"      ! {row.problem}")
    if any(row.source is not None and row.source.development for row in rows):
        print()
        print(f"Development plugins come from {DEV_PLUGINS_ENV}.")


def _list(role: Role, load: ConfigLoader, args: argparse.Namespace) -> int:
    from pyspire.plugin.inventory import inventory  # noqa: PLC0415 - see above

    declarations = None
    if args.config:
        try:
            declarations = load(Path(args.config), args.expand_env).plugins
        except ConfigError as err:
            raise CliError(str(err)) from None
    try:
        rows = inventory(role, declarations)
    except CatalogError as err:
        raise CliError(str(err)) from None
    if args.output == "json":
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        _print_pretty(role, rows, args.config)
    unusable = [row for row in rows if row.selected and row.problem]
    for row in unusable:
        print(f'Error: {row.type} "{row.name}": {row.problem}', file=sys.stderr)
    return EXIT_ERROR if unusable else 0


def _new(role: Role, args: argparse.Namespace) -> int:
    from pyspire.plugin.starter import StarterError, write_starter  # noqa: PLC0415 - templates load on demand

    try:
        written = write_starter(role, args.type, args.name, Path(args.dir), distribution=args.distribution)
    except StarterError as err:
        raise CliError(str(err)) from None
    except OSError as err:
        raise CliError(f"-dir: cannot write {args.dir}: {err.strerror or err}") from None
    print(f"Wrote {written.root}:")
    for path in written.files:
        print(f"  {path.relative_to(written.root)}")
    print()
    print(written.next_steps)
    return 0


def register(commands: Any, role: Role, load: ConfigLoader) -> None:
    """Add ``plugins`` (and ``plugins new``) to a daemon's command parser."""
    plugins: argparse.ArgumentParser = commands.add_parser(
        "plugins", help=f"Lists the installed {role} plugins by type, or starts a new one (plugins new)"
    )
    plugins.add_argument("-config", default="", help="Mark the plugins this config file selects")
    plugins.add_argument("-expandEnv", dest="expand_env", action="store_true", help="Expand environment variables")
    plugins.add_argument("-output", choices=("pretty", "json"), default="pretty", help="Desired output format")
    plugins.set_defaults(handler=lambda args: _list(role, load, args))
    verbs = plugins.add_subparsers(dest="plugins_command", metavar="[new]")
    new = verbs.add_parser("new", help="Writes a new plugin package: entry point, README, contract tests")
    new.add_argument("type", choices=sorted(plugin_types(role)), help="The plugin type")
    new.add_argument("name", help="The plugin's name in config (lower case, digits, underscores)")
    new.add_argument("-dir", default=".", help="Where to create the package's folder (default: here)")
    new.add_argument("-distribution", default="", help="The distribution's name (default: pyspire-<name> with dashes)")
    new.set_defaults(handler=lambda args: _new(role, args))
