"""The built-in ``join_token`` NodeAttestor, for the server and the agent.

A join token is consumed by the daemons themselves, not by a plugin: the server must delete
it in the same datastore transaction that reads it (so two agents racing with one token
cannot both win), and the agent takes it from ``agent { join_token }`` or ``-joinToken``. The
classes here exist so that operators declare ``NodeAttestor "join_token"`` exactly as they do
for SPIRE, and so that a deployment that does not declare it refuses tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data

__all__ = ["AgentJoinToken", "ServerJoinToken"]


@dataclass(frozen=True)
class _NoOptions:
    """``join_token`` takes no plugin data."""


class ServerJoinToken:
    """Declares that the server accepts join tokens; the server consumes them itself."""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(_NoOptions, plugin_data)

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        raise FailedPrecondition("join tokens are consumed by the server, not through the plugin hook")


class AgentJoinToken:
    """Declares that the agent attests with a join token from its configuration."""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(_NoOptions, plugin_data)

    @hookimpl
    def attestation_payload(self) -> bytes:
        raise FailedPrecondition("no join token: set agent { join_token } or pass -joinToken")
