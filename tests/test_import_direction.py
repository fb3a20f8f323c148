"""The packages at the bottom import nothing above them.

``crypto`` (keys, signing, certificate templates) and ``proto`` (wire contracts and their
stubs) are leaves: they import no other pyspire package. ``spiffe`` (the standards as a
library) may use ``proto``'s Workload API stubs and nothing else: no server, agent or plugin
code. ``telemetry`` serves both daemons, so it imports neither (what it needs of one, such as
the server's rate-limited RPCs, its caller passes). Read from the source, every import counted (inside functions and ``TYPE_CHECKING``
blocks too), so a cycle cannot come back unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "core" / "pyspire"

ALLOWED = {
    "crypto": {"crypto"},
    "proto": {"proto"},
    "spiffe": {"spiffe", "proto"},
    "telemetry": {"telemetry", "proto", "plugin", "config", "listening", "http_listener", "__version__"},
}


def imported_packages(path: Path, package_dir: Path) -> set[tuple[str, int]]:
    """(pyspire package, line) for every import in ``path``, a module of the package at ``package_dir``."""
    found = set()
    depth = len(path.relative_to(package_dir).parts) - 1  # how far below the package's top
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            # ".x" stays in the package while it climbs no higher than its top directory.
            names = [f"pyspire.{package_dir.name}" if node.level <= depth + 1 else "pyspire.<outside>"]
        elif isinstance(node, ast.ImportFrom) and node.module == "pyspire":
            names = [f"pyspire.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pyspire":
                found.add((parts[1] if len(parts) > 1 else "<pyspire>", node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_nothing_above_it(package: str) -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{line} imports pyspire.{imported}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for imported, line in sorted(imported_packages(path, PACKAGE / package))
        if imported not in ALLOWED[package]
    ]
    assert not offending, f"pyspire.{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(offending)


def test_every_form_of_an_upward_import_is_seen(tmp_path: Path) -> None:
    package = tmp_path / "crypto"
    (package / "sub").mkdir(parents=True)
    probe = package / "sub" / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .. import keys\n"
        "from ... import server\n"
        "if TYPE_CHECKING:\n    from pyspire.plugin.facades import KeyManager\n"
        "def later():\n    import pyspire.agent.client\n"
        "from pyspire import spiffe\n"
    )
    found = {imported for imported, _ in imported_packages(probe, package)}
    assert found == {"crypto", "<outside>", "plugin", "agent", "spiffe"}
