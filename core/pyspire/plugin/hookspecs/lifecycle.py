"""Hooks every plugin has: configuration and shutdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.logger import PluginLogger
from pyspire.plugin.markers import hookspec


@hookspec(firstresult=True)
def configure(plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
    """Validate and take the plugin's configuration.

    Called once, before any other hook, with the ``plugin_data`` block of the plugin's
    declaration (already parsed from HCL or JSON; ``{}`` when absent), the daemon-wide
    settings, and the plugin's logger. Parse ``plugin_data`` with
    :func:`pyspire.plugin.parse_plugin_data` into a dataclass so that unknown keys and wrong
    types are reported uniformly.

    Keep ``logger`` (name it among the parameters to receive it) and log through it: its
    lines reach the daemon's log at the daemon's ``log_level``, with ``plugin_type`` and
    ``plugin_name`` fields. A logger of the plugin's own package
    (``logging.getLogger(__name__)``) only shows warnings and errors, as other libraries'
    loggers do.

    Raise :class:`~pyspire.plugin.errors.PluginConfigError` naming the key for bad
    configuration; the daemon refuses to start and prefixes the plugin and file. Keep side
    effects to what the plugin needs to work (open a key file, build a client); network
    calls that may fail transiently belong in the hooks that use them.
    """


@hookspec
def close() -> None:
    """Release what ``configure`` acquired (connections, threads).

    Called once when the daemon shuts down; never followed by another hook call.
    """
