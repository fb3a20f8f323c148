"""An agent attesting with x509pop to a real server: re-attestation after eviction and restart."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.support.daemons import start_agent, start_server
from tests.support.pki import make_ca


def test_x509pop_agent_attests_and_reattests_after_eviction(tmp_path: Path) -> None:
    root = make_ca(name="fleet root")
    node = node_certificate(root, common_name="host-1")
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    server = start_server(
        tmp_path / "server",
        extra='agent_ttl = "30s"',
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{tmp_path / "roots.pem"}"\n }}\n }}',
    )
    fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    agent_id = f"spiffe://example.org/spire/agent/x509pop/{fingerprint}"
    attestor = (
        'NodeAttestor "x509pop" {\n plugin_data {\n'
        f' private_key_path = "{tmp_path / "node.key"}"\n certificate_path = "{tmp_path / "node.pem"}"\n'
        " }\n }"
    )
    agent = start_agent(tmp_path / "agent", server, node_attestor=attestor)
    try:
        listed = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : x509pop" in listed
        assert "Can re-attest     : true" in listed
        assert "Selector          : x509pop:subject:cn:host-1" in listed

        server.cli("agent", "evict", "-spiffeID", agent_id)
        deadline = time.monotonic() + 20
        while "asks this agent to attest again" not in agent.log():
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.2)
        assert agent.process is not None
        assert agent.process.poll() is None
        assert agent_id in server.cli("agent", "list").stdout

        # A re-attestable node renews by attesting again (the server refuses RenewAgent): the
        # 30 s SVID (40 s with the 10 s backdate) is renewed about 10 s after it was issued.
        attested = agent.log().count("Node attestation was successful")
        time.sleep(13)
        assert agent.log().count("Node attestation was successful") > attested
        assert agent.process.poll() is None

        # Losing the saved SVID is no problem for a re-attestable node.
        assert agent.stop() == 0
        (tmp_path / "agent" / "data" / "agent-data.json").unlink()
        agent.start()
        assert "Node attestation was successful" in agent.log().rsplit("Plugin loaded", 1)[-1]
    finally:
        agent.stop()
        server.stop()
