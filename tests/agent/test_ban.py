"""Banning an agent while its workloads stream, then evicting it (reliability case 16), on real processes.

The banned agent stops and deletes its SVID; restarted, its evidence is refused ("agent is
banned"); with the SVID it held it can no longer mint or renew anything; once evicted, an
x509pop node attests again. Another agent of the same server serves its workloads throughout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.agent.test_end_to_end import _entry
from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.server.test_api_security import roots
from tests.support.daemons import start_agent, start_server
from tests.support.pki import make_ca
from tests.support.waiting import eventually
from tests.support.workloads import x509_context
from tests.support.x509pop_nodes import PopNode, x509pop_server_plugin

UID = os.getuid()


def _new_svid_status(runner: asyncio.Runner, client: object, entry_id: str) -> str:
    async def run() -> str:
        csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
        try:
            [(_, svid, message)] = await client.new_x509_svids([(entry_id, csr)])  # type: ignore[attr-defined]
        except GRPCError as err:
            return f"{err.status.name}: {err.message}"
        return "issued" if svid is not None else message

    return runner.run(run())


@pytest.mark.slow
def test_a_banned_agent_stops_cannot_mint_or_come_back_until_evicted(tmp_path: Path) -> None:
    root = make_ca(name="fleet root")
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    server = start_server(
        tmp_path / "server",
        extra="ratelimit {\n attestation = false\n }",
        plugins=x509pop_server_plugin(tmp_path / "roots.pem"),
    )
    node = node_certificate(root, common_name="banned-host")
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    agent_id = f"spiffe://example.org/spire/agent/x509pop/{fingerprint}"
    attestor = (
        'NodeAttestor "x509pop" {\n plugin_data {\n'
        f' private_key_path = "{tmp_path / "node.key"}"\n certificate_path = "{tmp_path / "node.pem"}"\n'
        " }\n }"
    )
    other_alias = "spiffe://example.org/node/bystander"
    runner = asyncio.Runner()
    banned = bystander = None
    try:
        banned = start_agent(tmp_path / "banned", server, node_attestor=attestor)
        bystander = start_agent(tmp_path / "bystander", server, server.join_token(other_alias))
        _entry(server, agent_id, "spiffe://example.org/on-the-banned-node", f"unix:uid:{UID}")
        _entry(server, other_alias, "spiffe://example.org/on-the-bystander", f"unix:uid:{UID}")
        eventually(lambda: x509_context(banned).svids, timeout=30)
        eventually(lambda: x509_context(bystander).svids, timeout=30)

        # A second node, played here, holding its agent SVID: what may it do once banned?
        held = PopNode(tmp_path / "held", node_certificate(root, common_name="held"))
        client, chain, _ = runner.run(held.attest(server.port, roots(server)))
        held_id = str(leaf_spiffe_id(chain[0]))
        held_entry = _entry(server, held_id, "spiffe://example.org/on-the-held-node", "unix:uid:1")
        eventually(lambda: _new_svid_status(runner, client, held_entry) == "issued", timeout=30)

        server.cli("agent", "ban", "-spiffeID", agent_id)
        server.cli("agent", "ban", "-spiffeID", held_id)

        # The real agent stops at its next sync and deletes its SVID; as SPIRE's agent, it keeps
        # the server's bundle, so a restart still trusts only the server it knew.
        assert banned.process is not None
        assert banned.process.wait(30) == 1
        assert "banned" in banned.log()
        saved = json.loads((tmp_path / "banned" / "data" / "agent-data.json").read_text())
        assert saved["svid"] is None
        assert [base64.b64decode(c) for c in saved["bundle"]] == [
            c.public_bytes(serialization.Encoding.DER) for c in roots(server)
        ]

        # The held SVID mints nothing and renews nothing, and the same evidence cannot attest.
        assert _new_svid_status(runner, client, held_entry) == f'PERMISSION_DENIED: agent "{held_id}" is banned'
        with pytest.raises(GRPCError) as renewal:
            runner.run(client.renew(build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))))
        assert renewal.value.status is Status.PERMISSION_DENIED
        client.close()
        with pytest.raises(GRPCError, match="failed to attest: agent is banned"):
            runner.run(held.attest(server.port, roots(server)))

        # Restarted, the banned agent is refused and stops again.
        banned.start(wait=False)
        assert banned.process is not None
        assert banned.process.wait(90) == 1
        assert "agent is banned" in banned.log().rsplit("Plugin loaded", 1)[-1]

        # The bystander's workloads were served all along.
        assert [str(s.spiffe_id) for s in x509_context(bystander).svids] == ["spiffe://example.org/on-the-bystander"]
        assert bystander.process is not None
        assert bystander.process.poll() is None

        # Evicted, an x509pop node attests again, and its workloads get their SVIDs.
        server.cli("agent", "evict", "-spiffeID", agent_id)
        banned.start()
        assert "Node attestation was successful" in banned.log().rsplit("Plugin loaded", 1)[-1]
        eventually(lambda: x509_context(banned).svids, timeout=30)
        assert "Traceback" not in server.log()
    finally:
        runner.close()
        for daemon in (banned, bystander):
            if daemon is not None and daemon.process is not None and daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
                daemon.stop()
        server.stop()
