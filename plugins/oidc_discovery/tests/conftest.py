"""Fixtures: one real server and agent for the session, a test CA with a ``localhost`` certificate.

The server signs JWT-SVIDs with ``jwt_issuer`` set to ``https://localhost:<issuer_port>``, the
address the HTTPS providers of the tests listen on, so the ``iss`` of every JWT-SVID names the
provider that serves its key, as a relying party (AWS STS among them) requires. The agent
gives this test process (and the providers it starts, which run as the same user)
``spiffe://example.org/oidc``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe.workloadapi import WorkloadApiClient

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.free_port import free_port
from tests.support.pki import Issued, make_ca, make_tls_certificate, write_pem
from tests.support.workloads import fetched_spiffe_id, register_this_process

WORKLOAD_ID = "spiffe://example.org/oidc"
NODE_ID = "spiffe://example.org/node"


@dataclass
class Deployment:
    """The running server and agent, and the issuer the server writes into JWT-SVIDs."""

    server: ServerDaemon
    agent: AgentDaemon
    issuer_port: int

    @property
    def issuer(self) -> str:
        return f"https://localhost:{self.issuer_port}"

    def mint(self, audience: str) -> str:
        """A JWT-SVID for this process from the agent, for ``audience``."""

        async def fetch() -> str:
            async with WorkloadApiClient(self.agent.address, timeout=10) as client:
                return (await client.fetch_jwt_svids([audience]))[0].token

        return asyncio.run(fetch())


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("deployment")
    issuer_port = free_port()
    server = start_server(directory / "server", extra=f'jwt_issuer = "https://localhost:{issuer_port}"')
    agent = None
    try:
        agent = start_agent(directory / "agent", server, server.join_token(NODE_ID))
        register_this_process(server, NODE_ID, WORKLOAD_ID)
        assert fetched_spiffe_id(agent) == WORKLOAD_ID
        yield Deployment(server, agent, issuer_port)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


@dataclass
class Tls:
    """A CA and a ``localhost`` serving certificate signed by it, as files."""

    ca: Issued
    ca_file: Path
    cert_file: Path
    key_file: Path

    def reissue(self) -> Issued:
        """Write a new ``localhost`` certificate and key over the files; the new pair."""
        issued = make_tls_certificate(self.ca, "localhost")
        write_pem(issued, self.cert_file, self.key_file)
        return issued


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = make_ca(name="oidc test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = write_pem(make_tls_certificate(ca, "localhost"), tmp_path / "cert.pem", tmp_path / "key.pem")
    return Tls(ca, ca_file, cert_file, key_file)
