"""Every hook and every built-in plugin is documented (the plugin author's reference)."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import pytest
from pyspire.plugin import hookspecs
from pyspire.plugin.discovery import installed_sources
from pyspire.plugin.markers import PROJECT
from pyspire.plugin.reference import render_reference

REPO = Path(__file__).resolve().parents[2]
HOOK_REFERENCE = REPO / "docs" / "plugins" / "hooks.md"

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


def test_the_hook_reference_is_current() -> None:
    """docs/plugins/hooks.md is generated from the hookspecs and the starter's implementations."""
    assert HOOK_REFERENCE.read_text() == render_reference(), (
        "docs/plugins/hooks.md is stale: run python -m pyspire.plugin.reference --write docs/plugins/hooks.md"
    )


def test_every_hook_is_in_the_reference_with_an_example() -> None:
    page = HOOK_REFERENCE.read_text()
    for module in SPEC_MODULES:
        for name, hook in inspect.getmembers(module, inspect.isfunction):
            if hasattr(hook, f"{PROJECT}_spec"):
                section = page.split(f"### `{name}(", 1)
                assert len(section) == 2, f"hook {name} is not in the reference"
                assert f"@hookimpl\ndef {name}(" in section[1].split("### ", 1)[0], f"hook {name} has no example"
