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
from pyspire.plugin.catalog import CatalogError, Role, validate_declarations
from pyspire.plugin.core_config import CoreConfig
from pyspire.spiffe import TrustDomain
from pyspire.telemetry.logs import configure_logging

__all__ = ["DAEMON_LOGGERS", "StartupRefusal", "run_daemon", "validate_config"]


class _LogSettings(Protocol):
    @property
    def log_level(self) -> object: ...
    @property
    def log_format(self) -> object: ...
    @property
    def log_file(self) -> Path | None: ...
    @property
    def log_source_location(self) -> bool: ...


class _DaemonSettings(_LogSettings, Protocol):
    @property
    def trust_domain(self) -> TrustDomain: ...
    @property
    def data_dir(self) -> Path: ...


class _Config(Protocol):
    @property
    def plugins(self) -> tuple[object, ...]: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...
    @property
    def source(self) -> Path | None: ...


class StartupRefusal(Exception):
    """A daemon's start-up rule refuses the config (the agent's ``StartupError`` is one)."""


DAEMON_LOGGERS: dict[Role, str] = {"server": "pyspire.server", "agent": "pyspire.agent.daemon"}
"""The loggers the daemons log their config warnings with (``validate`` uses the same)."""


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
    configure_logging(
        section.log_level.value,  # type: ignore[attr-defined]
        section.log_format.value,  # type: ignore[attr-defined]
        section.log_file,
        source_location=section.log_source_location,
    )
    try:
        return run(config)
    except (CatalogError, ConfigError) as err:
        logging.getLogger(f"pyspire.{role}").error("%s", err)
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except Exception:
        # A bug: the command line says so in one line; the log keeps the traceback to report.
        logging.getLogger(f"pyspire.{role}").exception("The %s stopped on an unexpected error", role)
        raise


def validate_config(
    load: Callable[[], C],
    settings: Callable[[C], _DaemonSettings],
    role: Role,
    checks: Callable[[C], None] = lambda config: None,
) -> int:
    """Check the config as ``run`` would before starting anything, without side effects.

    The file, the warnings ``run`` would log (logged the same way, on stderr), the daemon's own
    start-up rules (``checks``) and every plugin: installed, of its declared type, and its
    ``plugin_data`` (see :func:`pyspire.plugin.catalog.validate_declarations`).
    """
    try:
        config = load()
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    section = settings(config)
    configure_logging("WARN", section.log_format.value, None, stream=sys.stderr)  # type: ignore[attr-defined]
    for warning in config.warnings:
        logging.getLogger(DAEMON_LOGGERS[role]).warning(warning)
    source = config.source.name if config.source else "config"
    core = CoreConfig(trust_domain=section.trust_domain, data_dir=Path(section.data_dir))
    try:
        checks(config)
        validate_declarations(role, config.plugins, core, source=source)  # type: ignore[arg-type]
    except (ConfigError, CatalogError, StartupRefusal) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(f"SPIRE {role} configuration file is valid.")
    return 0
