"""Fixtures: one real server and agent for the session, a test CA with a ``localhost`` certificate.

The server signs JWT-SVIDs with ``jwt_issuer`` set to ``https://localhost:<issuer_port>``, the
address the HTTPS providers of the tests listen on, so the ``iss`` of every JWT-SVID names the
provider that serves its key, as a relying party (AWS STS among them) requires. The agent
gives this test process (and the providers it starts, which run as the same user)
``spiffe://example.org/oidc``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from plugins.oidc_discovery.tests.deployment import NODE_ID, WORKLOAD_ID, Deployment, Tls
from tests.support.daemons import start_agent, start_server
from tests.support.free_port import free_port
from tests.support.pki import make_ca, make_tls_certificate, write_pem
from tests.support.workloads import fetched_spiffe_id, register_this_process


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


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = make_ca(name="oidc test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = write_pem(make_tls_certificate(ca, "localhost"), tmp_path / "cert.pem", tmp_path / "key.pem")
    return Tls(ca, ca_file, cert_file, key_file)
