"""What ``pyspire-server`` and ``pyspire-agent`` share on their command lines: ``run`` and ``validate``.

Both load a config file (with the command-line overrides SPIRE accepts), report a bad one as
``Error: <what and where>`` with exit code 1, and otherwise hand it to the daemon.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from pyspire.config import ConfigError
from pyspire.plugin.catalog import CatalogError, Role, check_declarations
from pyspire.telemetry.logs import configure_logging

__all__ = ["run_daemon", "validate_config"]


class _LogSettings(Protocol):
    @property
    def log_level(self) -> object: ...
    @property
    def log_format(self) -> object: ...
    @property
    def log_file(self) -> Path | None: ...


class _Config(Protocol):
    @property
    def plugins(self) -> tuple[object, ...]: ...


C = TypeVar("C", bound=_Config)


def run_daemon(
    load: Callable[[], C], settings: Callable[[C], _LogSettings], run: Callable[[C], int], role: Role
) -> int:
    """Load the config, set up logging as it says, run the daemon; the exit code."""
    try:
        config = load()
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    section = settings(config)
    configure_logging(section.log_level.value, section.log_format.value, section.log_file)  # type: ignore[attr-defined]
    try:
        return run(config)
    except (CatalogError, ConfigError) as err:
        logging.getLogger(f"pyspire.{role}").error("%s", err)
        print(f"Error: {err}", file=sys.stderr)
        return 1


def validate_config(load: Callable[[], C], role: Role, config_path: str) -> int:
    """Load the config and check its plugin declarations without starting anything."""
    try:
        config = load()
        check_declarations(role, config.plugins, source=Path(config_path).name)  # type: ignore[arg-type]
    except (ConfigError, CatalogError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(f"SPIRE {role} configuration file is valid.")
    return 0
