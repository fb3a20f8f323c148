"""The DelegatedIdentity API: pyspire-agent and a real spire-agent answer the same scenario alike.

Both agents serve one pyspire-server; a client built from pyspire's copy of spire-api-sdk's
protos drives each agent's admin socket through tests/support/delegated.scenario (authorization
failures, argument errors, X.509 by selectors and by PID, JWT-SVIDs, both bundle streams).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.agent.test_delegated_identity import EXPECTED
from tests.support import delegated
from tests.support.daemons import start_agent, start_server
from tests.support.pki import make_ca

pytestmark = pytest.mark.slow


def test_pyspire_agent_answers_delegates_as_spire_agent_does(tmp_path: Path, spire_agent_bin: Path) -> None:
    partner = make_ca("partner.test", name="partner root")
    partner_pem = tmp_path / "partner.pem"
    partner_pem.write_bytes(partner.certificate.public_bytes(serialization.Encoding.PEM))
    server = start_server(tmp_path / "server")
    agents = []
    try:
        found = {}
        for kind, executable in (("spire-agent", spire_agent_bin), ("pyspire-agent", None)):
            admin = tmp_path / f"{kind}-admin" / "admin.sock"
            alias = f"spiffe://example.org/node/{kind}-{uuid.uuid4()}"
            agent = start_agent(
                tmp_path / kind,
                server,
                server.join_token(alias),
                executable=executable,
                extra=f'admin_socket_path = "{admin}"\n    authorized_delegates = ["{delegated.DELEGATE}"]',
            )
            agents.append(agent)
            found[kind] = delegated.scenario(server, admin, alias, os.getuid(), partner_pem)
        assert found["pyspire-agent"] == found["spire-agent"]
        assert found["spire-agent"] == EXPECTED
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
