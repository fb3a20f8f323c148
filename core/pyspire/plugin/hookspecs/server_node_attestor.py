"""Server NodeAttestor: verifies the evidence an agent presents and names the node.

The server picks the plugin whose name equals the attestation type the agent sent
(``x509pop``, ``aws_iid``...). ``join_token`` is handled by the server itself, because a
token must be consumed atomically in the datastore.
"""

from __future__ import annotations

from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.markers import hookspec


@hookspec(firstresult=True)
def attest_node(payload: bytes, challenge: Challenge, client_ip: str) -> AttestationResult:
    """Verify an agent's attestation payload and return the node it proves.

    Called once per ``AttestAgent`` stream, in a worker thread, with the payload the agent's
    plugin of the same name produced. A challenge/response attestor calls ``challenge(data)``
    (as often as its protocol needs) and gets the agent's answer back. ``client_ip`` is the
    address the agent's connection comes from as the server sees it (its immediate peer: a
    load balancer's, behind one), or ``""`` when unknown; a plugin that has no use for it
    leaves it out of its signature.

    Return an :class:`~pyspire.plugin.AttestationResult`. Raise
    :class:`~pyspire.plugin.InvalidArgument` for malformed evidence (bad JSON, a truncated
    signature, oversized input — check sizes before doing expensive work),
    :class:`~pyspire.plugin.PermissionDenied` for evidence that is well formed but not
    acceptable (a wrong signature, an account off the allow-list, a stale nonce) and
    :class:`~pyspire.plugin.Internal` when a service it depends on fails. Never return a
    result on doubt: a security check that cannot run fails closed.

    The server — not the plugin — refuses replays of non-re-attestable evidence (an agent ID
    that is already attested), banned agents, and agent IDs that collide with the server's.
    """
