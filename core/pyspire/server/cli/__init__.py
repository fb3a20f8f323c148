"""``pyspire-server``: SPIRE's server command line (same verbs, same single-dash flags).

Each command module registers its verbs on the parser; commands that talk to a running server
use its local admin socket (``-socketPath``, default ``/tmp/spire-server/private/api.sock``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyspire import command_line
from pyspire.plugin import cli as plugins_cli
from pyspire.server.cli import admin, entry, federation, localauthority, logger, migrate, run

if TYPE_CHECKING:
    from pyspire.config.daemon_config import ServerConfig

__all__ = ["main"]


def _load_config(path: Path, expand: bool) -> ServerConfig:
    # Only ``plugins -config`` reads a config file: the schema loads then, not with every command.
    from pyspire.config.daemon_config import load_server_config  # noqa: PLC0415

    return load_server_config(path, expand_env=expand)


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    parser = command_line.CliParser(prog="pyspire-server", description="SPIFFE server (SPIRE-compatible)")
    parser.add_argument(*command_line.VERSION_FLAGS, action="store_true", help="Print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    run.register(commands)
    entry.register(commands)
    admin.register(commands)
    localauthority.register(commands)
    federation.register(commands)
    logger.register(commands)
    plugins_cli.register(commands, "server", _load_config)
    migrate.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the process exit code."""
    return command_line.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
