"""Build hook of the operator's distribution (``pyspire``): it depends on the workload library.

The library (``pyspire-spiffe``, core/pyproject.toml) ships part of the ``pyspire`` package and
the operator's wheel ships the rest, so a wheel of ``pyspire`` needs ``pyspire-spiffe`` beside
it. Where that dependency comes from depends on where the wheel is built:

- from a checkout (``pip install .``), the library is built from the same checkout
  (``pyspire-spiffe @ file:///…/core``): one command installs both, and nothing is looked up
  by name on an index where someone else could have registered it;
- from the sdist (a release), it is ``pyspire-spiffe==<this version>`` from the index.

An editable install needs neither: it puts all of core/ on the path, the library included, and
``pip install -e . -e ./core`` would otherwise see two sources for one distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class OperatorBuildHook(BuildHookInterface):
    """Adds the ``pyspire-spiffe`` requirement to standard wheels."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Called by hatchling before a wheel is built; ``version`` is "standard" or "editable"."""
        if version == "editable":
            return
        library = Path(self.root) / "core"
        if (library / "pyproject.toml").is_file():
            requirement = f"pyspire-spiffe @ {library.resolve().as_uri()}"
        else:
            requirement = f"pyspire-spiffe=={self.metadata.version}"
        build_data["dependencies"].append(requirement)
