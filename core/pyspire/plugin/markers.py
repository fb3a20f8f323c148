"""The pluggy markers for pyspire's hook specifications and plugin implementations."""

from __future__ import annotations

import pluggy

PROJECT = "pyspire"

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a function in a ``pyspire.plugin.hookspecs`` module as a hook specification."""

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin method as the implementation of the hook of the same name."""
