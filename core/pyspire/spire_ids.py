"""SPIRE's reserved SPIFFE ID paths, spelled in one place.

SPIRE keeps ``/spire`` in every trust domain for itself: the server is
``spiffe://<td>/spire/server`` and every agent is ``spiffe://<td>/spire/agent/<attestor>/...``
(``join_token/<token>`` for a join token). Server, agent, CLI and plugins build and recognise
these IDs only through this module.
"""

from __future__ import annotations

from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain

__all__ = [
    "AGENT_PATH",
    "RESERVED_PATH",
    "SERVER_PATH",
    "agent_id",
    "is_agent_id",
    "is_reserved",
    "join_token_agent_id",
    "server_id",
]

RESERVED_PATH = "/spire"
"""The path SPIRE keeps for itself: no workload ID lies under it."""
SERVER_PATH = RESERVED_PATH + "/server"
"""The server's path in its trust domain."""
AGENT_PATH = RESERVED_PATH + "/agent"
"""The path every agent ID starts with (followed by the attestor's own path)."""


def server_id(trust_domain: TrustDomain) -> SpiffeId:
    """``spiffe://<td>/spire/server``."""
    return SpiffeId.from_path(trust_domain, SERVER_PATH)


def agent_id(trust_domain: TrustDomain, agent_path: str) -> SpiffeId:
    """``spiffe://<td>/spire/agent<agent_path>`` for a node attestor's ``agent_path`` (``/x509pop/...``).

    Raises :class:`pyspire.spiffe.SpiffeIdError` when the path is not a valid one, including
    one without its leading ``/`` (which would name ``/spire/agentx509pop/...``, outside the
    agents' namespace, as SPIRE refuses it too).
    """
    if not agent_path.startswith("/"):
        raise SpiffeIdError("no_leading_slash", f'invalid agent path "{agent_path}": it must start with "/"')
    return SpiffeId.from_path(trust_domain, AGENT_PATH + agent_path)


def join_token_agent_id(trust_domain: TrustDomain, token: str) -> SpiffeId:
    """``spiffe://<td>/spire/agent/join_token/<token>``; SpiffeIdError when the token cannot be a segment."""
    return SpiffeId.from_segments(trust_domain, *AGENT_PATH.split("/")[1:], "join_token", token)


def is_agent_id(spiffe_id: SpiffeId, trust_domain: TrustDomain) -> bool:
    """Whether ``spiffe_id`` is an agent of ``trust_domain`` (its path below ``/spire/agent/``)."""
    return spiffe_id.member_of(trust_domain) and spiffe_id.path.startswith(AGENT_PATH + "/")


def is_reserved(spiffe_id: SpiffeId) -> bool:
    """Whether ``spiffe_id``'s path is ``/spire`` or below it (SPIRE's own, never a workload's)."""
    return spiffe_id.path == RESERVED_PATH or spiffe_id.path.startswith(RESERVED_PATH + "/")
