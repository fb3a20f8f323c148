"""What a server NodeAttestor returns when it has verified a node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AttestationResult", "Challenge"]

Challenge = Callable[[bytes], bytes]
"""Sends a challenge to the attesting agent and returns its answer (blocking).

Raises :class:`~pyspire.plugin.errors.InvalidArgument` if the agent hangs up or does not
answer in time.
"""


@dataclass(frozen=True)
class AttestationResult:
    """A verified node: who it is, what is true of it, and whether it may attest again.

    ``agent_path`` is the path below ``/spire/agent``, such as ``/x509pop/<fingerprint>``;
    the server forms ``spiffe://<trust domain>/spire/agent<agent_path>`` and validates it
    strictly (no dot segments, no empty segments), so a plugin never normalises paths.
    ``selector_values`` become selectors of the plugin's own type (``x509pop:subject:cn:...``).
    ``can_reattest`` says whether the same evidence may attest an already-attested agent
    again (x509pop, k8s_psat); when false the attestation is trust-on-first-use and the server
    refuses a second one for the same agent ID until the agent is evicted.
    """

    agent_path: str
    selector_values: tuple[str, ...] = field(default=())
    can_reattest: bool = False
