"""pyspire: SPIFFE and SPIRE in Python.

The standards live in :mod:`pyspire.spiffe`, the plugin framework in :mod:`pyspire.plugin`,
configuration in :mod:`pyspire.config`; :mod:`pyspire.server` and :mod:`pyspire.agent` are the
two daemons.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyspire")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
