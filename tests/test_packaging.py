"""Every distribution the project ships carries the licence and says which Pythons it is tested on.

Operators install the server, integrators one plugin, workloads only the library: each of
those wheels must stand alone, so each holds the Apache-2.0 text and declares it, and its
classifiers name the Python CI runs (the interpreter running this test).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = [ROOT, ROOT / "core", *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]


def _project(directory: Path) -> dict[str, object]:
    return tomllib.loads((directory / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("directory", DISTRIBUTIONS, ids=lambda p: str(p.relative_to(ROOT)) or ".")
def test_each_distribution_carries_the_licence_and_names_the_python_ci_runs(directory: Path) -> None:
    project = _project(directory)
    assert project["license"] == "Apache-2.0"
    assert (directory / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    classifiers = project["classifiers"]
    assert isinstance(classifiers, list)
    running = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert running in classifiers, f"{directory.name}: add the classifier {running!r}"
    assert "Programming Language :: Python :: 3 :: Only" in classifiers


def test_the_list_covers_every_plugin_folder() -> None:
    folders = {p for p in (ROOT / "plugins").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= set(DISTRIBUTIONS), "a plugin folder without a pyproject.toml"
