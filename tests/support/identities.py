"""A real server and agent giving this test process three identities, told apart by hint.

Entries for ``/server``, ``/client`` and ``/intruder`` all select this process's uid, so one
process can play both ends of a connection and an unwanted third party, each source choosing
its SVID with a picker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspire.spiffe import Backoff, SvidPicker, X509Source, X509Svid

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process, x509_context

SERVER = "spiffe://example.org/server"
CLIENT = "spiffe://example.org/client"
INTRUDER = "spiffe://example.org/intruder"


def pick(hint: str) -> SvidPicker:
    """A picker choosing the SVID whose hint is ``hint``."""

    def picker(svids: Sequence[X509Svid]) -> X509Svid:
        return next(svid for svid in svids if svid.hint == hint)

    return picker


@dataclass
class Deployment:
    """A server, an agent attested as ``alias``, and the three entries."""

    server: ServerDaemon
    agent: AgentDaemon
    alias: str

    def source(self, hint: str, backoff: Backoff | None = None) -> X509Source:
        """An X509Source serving the identity registered with ``hint``."""
        return X509Source(self.agent.address, timeout=20, picker=pick(hint), backoff=backoff)


def register_three_identities(server: ServerDaemon, alias: str, *flags: str) -> None:
    """/server, /client, /intruder for this process, a second apart (the agent lists the oldest first)."""
    for index, (spiffe_id, hint) in enumerate(((SERVER, "server"), (CLIENT, "client"), (INTRUDER, "intruder"))):
        if index:
            time.sleep(1.1)
        register_this_process(server, alias, spiffe_id, "-hint", hint, *flags)


def start_deployment(
    directory: Path, *entry_flags: str, agent_options: Mapping[str, object] | None = None, **server_options: object
) -> Deployment:
    """Start it all under ``directory``; ``entry_flags`` go to every ``entry create`` (``-x509SVIDTTL 14``).

    ``agent_options`` go to start_agent, ``server_options`` to start_server.
    """
    server = start_server(directory / "server", **server_options)
    alias = f"spiffe://example.org/node/{directory.name}"
    try:
        agent = start_agent(directory / "agent", server, server.join_token(alias), **(agent_options or {}))
    except BaseException:
        server.stop()
        raise
    register_three_identities(server, alias, *entry_flags)
    eventually(lambda: len(x509_context(agent).svids) == 3, timeout=30)
    return Deployment(server, agent, alias)
