"""Agent NodeAttestor: produces the evidence that proves this node to the server."""

from __future__ import annotations

from pyspire.plugin.markers import hookspec


@hookspec(firstresult=True)
def attestation_payload() -> bytes:
    """Gather this node's evidence.

    Called each time the agent attests (first start, and re-attestation for re-attestable
    types), in a worker thread. The bytes are sent to the server's plugin of the same name.
    Raise :class:`~pyspire.plugin.Unavailable` when a source (a metadata service) cannot be
    reached right now — the agent retries — and other plugin errors for permanent problems.
    """


@hookspec(firstresult=True)
def answer_challenge(challenge: bytes) -> bytes:
    """Answer a challenge from the server's plugin.

    Called zero or more times during one attestation, after :func:`attestation_payload`,
    with each challenge the server sends. Plugins without challenge/response need not
    implement it; the agent then fails an attestation that gets a challenge.
    """
