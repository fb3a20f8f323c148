"""The server's own refusals, below the API handlers: plain Python, no gRPC.

Everything under the handlers (attestation, agent authentication, the CA) raises
:class:`pyspire.plugin.errors.PluginError` subclasses, whose code is the gRPC status they
become; :mod:`pyspire.server.api.errors` turns them into gRPC errors, in one place. An agent's
refusal carries a :class:`DenialReason` besides, because SPIRE's agents decide from it whether
to re-attest, retry or shut down.
"""

from __future__ import annotations

import enum

from pyspire.plugin.errors import PermissionDenied

__all__ = ["AgentDenied", "DenialReason"]


class DenialReason(enum.Enum):
    """Why an agent is refused (SPIRE's ``PermissionDeniedDetails.Reason``, same numbers)."""

    AGENT_EXPIRED = 1
    AGENT_NOT_ATTESTED = 2
    AGENT_NOT_ACTIVE = 3
    AGENT_BANNED = 4
    AGENT_MUST_REATTEST = 5


class AgentDenied(PermissionDenied):
    """An agent may not do what it asked; ``reason`` tells it what to do next."""

    def __init__(self, reason: DenialReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
