"""pyspire: SPIFFE and SPIRE in Python.

The standards and the workload library live in :mod:`pyspire.spiffe`, the plugin framework in
:mod:`pyspire.plugin`, configuration in :mod:`pyspire.config`; :mod:`pyspire.server` and
:mod:`pyspire.agent` are the two daemons.

Two distributions install this package: ``pyspire-spiffe`` (this file, :mod:`pyspire.spiffe`
and the Workload API messages: what a workload needs) and ``pyspire`` (everything else, for
operators; it depends on the first). They always carry the same version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    __version__: str

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up when first asked for: importlib.metadata costs every process that imports
    # pyspire ~45 ms of CPU, and most CLI calls never print the version.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - see above

    try:
        found = version("pyspire-spiffe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
