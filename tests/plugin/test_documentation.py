"""Every hook and every built-in plugin is documented (the plugin author's reference)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest
from pyspire.plugin import hookspecs
from pyspire.plugin.discovery import installed_sources
from pyspire.plugin.markers import PROJECT

SPEC_MODULES: list[ModuleType] = [getattr(hookspecs, name) for name in hookspecs.__all__]


@pytest.mark.parametrize("module", SPEC_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_hook_has_a_reference_docstring(module: ModuleType) -> None:
    assert len((module.__doc__ or "").strip()) > 40, f"{module.__name__} needs a module docstring"
    hooks = [obj for _, obj in inspect.getmembers(module, inspect.isfunction) if hasattr(obj, f"{PROJECT}_spec")]
    assert hooks, f"{module.__name__} declares no hooks"
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert len(doc) > 40, (
            f"{module.__name__}.{hook.__name__} needs a docstring saying when it is called and what it returns"
        )
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(hook).parameters.values())


@pytest.mark.parametrize("role", ["server", "agent"])
def test_every_built_in_plugin_is_documented(role: str) -> None:
    for source in installed_sources(role):  # type: ignore[arg-type]
        if source.distribution != "pyspire":
            continue  # third-party plugins document themselves
        plugin = source.load()
        assert inspect.getdoc(plugin), f"built-in plugin {source.name} ({source.target}) has no docstring"
