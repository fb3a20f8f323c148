"""Typed ``plugin_data``: the same loader the daemons use for their own config blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pyspire.config.schema import ConfigError, load_section
from pyspire.plugin.errors import PluginConfigError

__all__ = ["parse_plugin_data"]

T = TypeVar("T")


def parse_plugin_data(config_class: type[T], plugin_data: Mapping[str, Any]) -> T:
    """Build the dataclass ``config_class`` from ``plugin_data``, checking every key.

    Field types drive conversion (str, int, bool, durations, lists, nested dataclasses,
    ``Literal`` choices, trust domains...) and dataclass defaults make keys optional. An
    unknown key, a wrong type or a missing required key raises
    :class:`~pyspire.plugin.PluginConfigError` naming the key, with the blocks it is in
    (``clusters.c1.format``); the catalog adds the plugin and the file.
    """
    try:
        return load_section(config_class, plugin_data, where="plugin_data")
    except ConfigError as err:
        raise PluginConfigError(_nested_key(err), err.reason) from err


def _nested_key(err: ConfigError) -> str | None:
    """The key with the blocks it is in (``clusters.c1.format``, ``clusters[0].namespace``)."""
    inside = err.where.removeprefix("plugin_data").removeprefix(": ")
    if not inside:
        return err.key
    return f"{inside}.{err.key}" if err.key else inside
