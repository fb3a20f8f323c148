"""SIGUSR1, SPIRE's "reconfigure" signal: what pyspire does with a changed ``plugin_data_file``.

SPIRE reads each ``plugin_data_file`` again and configures the plugin anew when it changed.
pyspire's plugins are configured once (the ``configure`` hook's contract, which lets a plugin
build its clients and caches without guarding against a second configuration mid-flight), so
pyspire reads the file, says whether it changed, and tells the operator a restart applies it.
A file that can no longer be read is an error in the log; the running plugin is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pyspire.config.plugins import PluginDeclaration, reread_plugin_data
from pyspire.config.schema import ConfigError

__all__ = ["report_plugin_data_changes"]

_log = logging.getLogger("pyspire.reconfigurer")


def report_plugin_data_changes(declarations: Iterable[PluginDeclaration]) -> list[PluginDeclaration]:
    """Log, for each enabled plugin configured from a file, whether the file changed; the changed ones."""
    changed = []
    for declaration in declarations:
        if not declaration.enabled or declaration.data_file is None:
            continue
        fields = {
            "plugin_type": declaration.type,
            "plugin_name": declaration.name,
            "plugin_data_file": str(declaration.data_file),
        }
        try:
            current = reread_plugin_data(declaration)
        except ConfigError as err:
            _log.error("Failed to reconfigure plugin", extra={**fields, "error": str(err)})
            continue
        if current == declaration.plugin_data:
            _log.info("Plugin not reconfigured since the config is unchanged", extra=fields)
            continue
        changed.append(declaration)
        _log.warning(
            "Plugin not reconfigured: pyspire configures plugins once; restart the daemon to apply the changed "
            "plugin_data_file",
            extra=fields,
        )
    return changed
