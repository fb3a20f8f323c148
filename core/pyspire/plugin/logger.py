"""The logger each plugin is handed: its lines reach the daemon's log at the daemon's level.

The daemons set the level of the ``pyspire`` logger tree from ``log_level`` and leave other
libraries at WARNING, so that boto3 or urllib3 do not flood the log. A plugin logging through
``logging.getLogger(__name__)`` in its own package would therefore lose its INFO and DEBUG
lines. The ``configure`` hook hands every plugin a logger under ``pyspire.plugins.`` whose
records carry ``plugin_type`` and ``plugin_name``, the fields SPIRE's plugin log lines have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

__all__ = ["LOGGER_PREFIX", "PluginLogger", "plugin_logger"]

LOGGER_PREFIX = "pyspire.plugins"

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:
    _Adapter = logging.LoggerAdapter


class PluginLogger(_Adapter):
    """A plugin's logger: ``logger.info("Token renewed", extra={"lease_seconds": 60})``.

    Fields given with ``extra=`` are printed after the message, as the daemons' own are;
    ``plugin_type`` and ``plugin_name`` are always added.
    """

    def __init__(self, logger: logging.Logger, plugin_type: str, plugin_name: str) -> None:
        super().__init__(logger, {"plugin_type": plugin_type, "plugin_name": plugin_name})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the caller's ``extra`` fields with the plugin's (the standard adapter drops them)."""
        given: Mapping[str, Any] = kwargs.get("extra") or {}
        kwargs["extra"] = {**given, **(self.extra or {})}
        return msg, kwargs


def plugin_logger(plugin_type: str, plugin_name: str) -> PluginLogger:
    """The logger of plugin ``plugin_name`` of type ``plugin_type`` (``pyspire.plugins.keymanager.disk``)."""
    return PluginLogger(
        logging.getLogger(f"{LOGGER_PREFIX}.{plugin_type.lower()}.{plugin_name}"), plugin_type, plugin_name
    )
