"""``migrate-from-spire``: import a SPIRE server's entries, federation and trust bundle into pyspire's datastore.

SPIRE's datastore is named by SPIRE's own config file (``-spireConfig``: its ``DataStore "sql"``)
or directly (``-spireDatabaseType`` and ``-spireConnectionString``) and only ever read. pyspire's
datastore is the one its config names. ``-dryRun`` reports what would be imported.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pyspire.command_line import CliError
from pyspire.config.errors import ConfigError
from pyspire.plugin.errors import CatalogError, PluginError

if TYPE_CHECKING:
    from pyspire.plugin.facades import DataStore
    from pyspire.server.migration.spire_datastore import DatabaseType

__all__ = ["register"]

_TYPES = ("sqlite3", "postgres", "mysql")


def _spire_database(args: argparse.Namespace) -> tuple[DatabaseType, str]:
    from pyspire.config.plugins import SERVER_PLUGIN_TYPES, parse_plugins_block  # noqa: PLC0415 - see _migrate
    from pyspire.config.reader import read_config_file  # noqa: PLC0415

    if args.spire_config:
        document = read_config_file(Path(args.spire_config), expand_environment=args.expand_env)
        source = Path(args.spire_config).name
        for declaration in parse_plugins_block(document.get("plugins"), SERVER_PLUGIN_TYPES, source):
            if declaration.type == "DataStore" and declaration.name == "sql":
                data = declaration.plugin_data
                return _checked(data.get("database_type"), data.get("connection_string"), f"{source}: DataStore sql")
        raise ConfigError(source, None, 'no DataStore "sql" declaration: is this a SPIRE server config?')
    if not (args.spire_database_type and args.spire_connection_string):
        raise ConfigError("", None, "give -spireConfig, or -spireDatabaseType and -spireConnectionString")
    return _checked(args.spire_database_type, args.spire_connection_string, "command line")


def _checked(database_type: Any, connection_string: Any, where: str) -> tuple[DatabaseType, str]:
    if database_type not in _TYPES:
        raise ConfigError(where, "database_type", f"must be one of {', '.join(_TYPES)}, got {database_type!r}")
    if not isinstance(connection_string, str) or not connection_string:
        raise ConfigError(where, "connection_string", "is required")
    return cast("DatabaseType", database_type), connection_string


def _sqlite_path(connection_string: object) -> Path:
    return Path(str(connection_string).removeprefix("file:").split("?", 1)[0]).resolve()


def _same_database(pyspire: Mapping[str, Any], spire: tuple[str, str]) -> bool:
    database_type, connection = spire
    if pyspire.get("database_type") != database_type:
        return False
    if database_type == "sqlite3":
        return _sqlite_path(pyspire.get("connection_string", "")) == _sqlite_path(connection)
    return bool(pyspire.get("connection_string") == connection)


def _migrate(args: argparse.Namespace) -> int:
    # Imported here: they pull in SQLAlchemy and Alembic, the config schema and the plugin
    # catalogue, half a second of start-up that every other pyspire-server command (bundle show,
    # entry create, ...) would pay for.
    from pyspire.config.daemon_config import load_server_config  # noqa: PLC0415
    from pyspire.plugin.catalog import load_single_plugin  # noqa: PLC0415
    from pyspire.plugin.core_config import CoreConfig  # noqa: PLC0415
    from pyspire.server.migration.importer import MigrationError, import_snapshot  # noqa: PLC0415
    from pyspire.server.migration.spire_datastore import (  # noqa: PLC0415
        SpireDatastoreError,
        read_spire_datastore,
    )

    try:
        config = load_server_config(Path(args.config), expand_env=args.expand_env)
        spire = _spire_database(args)
        declaration = next((d for d in config.plugins if d.type == "DataStore" and d.enabled), None)
        if declaration is None:
            raise ConfigError(Path(args.config).name, None, "no DataStore plugin is configured")
        if _same_database(declaration.plugin_data, spire):
            raise ConfigError(
                Path(args.config).name,
                None,
                "pyspire's DataStore is SPIRE's own database: give pyspire a new one (SPIRE's is only read)",
            )
        snapshot = read_spire_datastore(*spire)
        section = config.server
        core = CoreConfig(trust_domain=section.trust_domain, data_dir=section.data_dir)
        section.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        datastore = cast("DataStore", load_single_plugin("server", declaration, core))
        try:
            report = import_snapshot(snapshot, datastore, section.trust_domain, dry_run=args.dry_run)
        finally:
            datastore.close()
    except (ConfigError, CatalogError, SpireDatastoreError, MigrationError, PluginError) as err:
        raise CliError(str(err)) from None
    if args.dry_run:
        print("Dry run: nothing was imported.")
    for line in report.lines():
        print(line)
    return 0


def register(commands: Any) -> None:
    """Add the command to the parser."""
    migrate = commands.add_parser(
        "migrate-from-spire",
        help="Imports a SPIRE server's entries, federation relationships and bundles (its datastore is only read)",
    )
    migrate.add_argument("-config", default="conf/server/server.conf", help="Path to the pyspire server config file")
    migrate.add_argument("-expandEnv", dest="expand_env", action="store_true", help="Expand environment variables")
    migrate.add_argument("-spireConfig", dest="spire_config", help="SPIRE's server config file (its DataStore sql)")
    migrate.add_argument("-spireDatabaseType", dest="spire_database_type", choices=_TYPES, help="SPIRE's database_type")
    migrate.add_argument("-spireConnectionString", dest="spire_connection_string", help="SPIRE's connection_string")
    migrate.add_argument("-dryRun", dest="dry_run", action="store_true", help="Report what would be imported")
    migrate.set_defaults(handler=_migrate)
