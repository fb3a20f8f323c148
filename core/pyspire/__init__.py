"""pyspire: SPIFFE and SPIRE in Python.

The standards and the workload library live in :mod:`pyspire.spiffe`, the plugin framework in
:mod:`pyspire.plugin`, configuration in :mod:`pyspire.config`; :mod:`pyspire.server` and
:mod:`pyspire.agent` are the two daemons.

Two distributions install this package: ``pyspire-spiffe`` (this file, :mod:`pyspire.spiffe`
and the Workload API messages: what a workload needs) and ``pyspire`` (everything else, for
operators; it depends on the first). They always carry the same version.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyspire-spiffe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
