"""Hooks every plugin has: configuration (and its side-effect-free check) and shutdown."""

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

    ``pyspire-server validate`` / ``pyspire-agent validate`` call ``configure`` (then
    ``close``) to check a plugin that does not implement :func:`validate`: a ``configure``
    that creates files, opens databases or talks to services must come with ``validate``.
    """


@hookspec(firstresult=True)
def validate(plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
    """Check ``plugin_data`` as ``configure`` would, without side effects.

    Raise :class:`~pyspire.plugin.errors.PluginConfigError` for every mistake ``configure``
    would refuse; create nothing, write nothing, connect nowhere (reading the plugin's own
    files is fine). The daemons call it right before ``configure``, and the ``validate``
    commands call only it, so both report the same refusal. Implement it when ``configure``
    has side effects; otherwise the ``validate`` commands run ``configure`` itself.
    """


@hookspec
def close() -> None:
    """Release what ``configure`` acquired (connections, threads).

    Called once when the daemon shuts down; never followed by another hook call.
    """
