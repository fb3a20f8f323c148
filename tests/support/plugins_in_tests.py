"""Plugins written in a test, installed for the real daemons the test starts.

A plugin is found through its entry point, so a test writes a module and a ``.dist-info``
directory naming its classes in the ``pyspire.server``/``pyspire.agent`` groups, and starts
the daemons with that directory on ``PYTHONPATH``: the daemon loads the plugin exactly as it
loads an installed distribution.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

__all__ = ["install_plugins"]


def install_plugins(
    directory: Path,
    module: str,
    source: str | None,
    entry_points: Mapping[str, Mapping[str, str]],
    *,
    distribution: str | None = None,
    version: str = "0",
) -> dict[str, str]:
    """Write ``module`` (``source``) and its entry points under ``directory``; the daemon's env.

    ``entry_points`` maps a role (``server``, ``agent``) to {plugin name: class name in
    ``module``}. The distribution is called ``module`` unless ``distribution`` is given
    (several may register one plugin name); ``source`` None writes no module (a broken
    distribution whose entry point cannot be imported).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if source is not None:
        (directory / f"{module}.py").write_text(textwrap.dedent(source))
    name = distribution or module
    info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = []
    for role, plugins in entry_points.items():
        lines = [f"[pyspire.{role}]", *(f"{plugin} = {module}:{cls}" for plugin, cls in plugins.items())]
        sections.append("\n".join(lines))
    (info / "entry_points.txt").write_text("\n\n".join(sections) + "\n")
    return {"PYTHONPATH": str(directory)}
