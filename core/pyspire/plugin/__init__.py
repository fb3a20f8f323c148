"""The plugin framework: what a plugin author imports.

A plugin is a class with ``@hookimpl`` methods named after the hooks of its type (see
:mod:`pyspire.plugin.hookspecs`), registered as an entry point in the group
``pyspire.server`` or ``pyspire.agent`` under the name operators write in config::

    from pyspire.plugin import AttestationResult, InvalidArgument, hookimpl, parse_plugin_data

    class AcmeAttestor:
        @hookimpl
        def configure(self, plugin_data, core):
            self.config = parse_plugin_data(AcmeConfig, plugin_data)

        @hookimpl
        def attest_node(self, payload, challenge):
            ...
            return AttestationResult(agent_path=f"/acme/{serial}", selector_values=[...])

:mod:`pyspire.plugin.testing` has the contract suites that test such a class.
"""

from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import (
    AlreadyExists,
    ErrorCode,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PluginConfigError,
    PluginError,
    Unavailable,
    Unimplemented,
)
from pyspire.plugin.keys import HashAlgorithm, KeyType, PublicKey
from pyspire.plugin.logger import PluginLogger
from pyspire.plugin.markers import hookimpl, hookspec
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.plugin.selectors import Selector, SelectorError
from pyspire.plugin.upstream import JwtKey, UpstreamTrust, UpstreamX509Ca
from pyspire.plugin.upstream_ca import PemSource, PemUpstreamCa, load_pem_upstream_ca

__all__ = [
    "AlreadyExists",
    "AttestationResult",
    "Challenge",
    "CoreConfig",
    "ErrorCode",
    "FailedPrecondition",
    "HashAlgorithm",
    "Internal",
    "InvalidArgument",
    "JwtKey",
    "KeyType",
    "NotFound",
    "PemSource",
    "PemUpstreamCa",
    "PermissionDenied",
    "PluginConfigError",
    "PluginError",
    "PluginLogger",
    "PublicKey",
    "Selector",
    "SelectorError",
    "Unavailable",
    "Unimplemented",
    "UpstreamTrust",
    "UpstreamX509Ca",
    "hookimpl",
    "hookspec",
    "load_pem_upstream_ca",
    "parse_plugin_data",
]
