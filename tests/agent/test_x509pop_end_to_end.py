"""Agents attesting with x509pop to a real server: re-attestation, SPIRE's selectors and limits."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.support.daemons import start_agent, start_server
from tests.support.pki import Issued, make_ca
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process


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
        assert "Selectors         : x509pop:subject:cn:host-1" in listed

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
        eventually(lambda: agent.log().count("Node attestation was successful") > attested, timeout=30)
        assert agent.process.poll() is None

        # Losing the saved SVID is no problem for a re-attestable node.
        assert agent.stop() == 0
        (tmp_path / "agent" / "data" / "agent-data.json").unlink()
        agent.start()
        assert "Node attestation was successful" in agent.log().rsplit("Plugin loaded", 1)[-1]
    finally:
        agent.stop()
        server.stop()


def test_after_evicting_both_kinds_and_restarting_only_the_reattestable_agent_is_back(tmp_path: Path) -> None:
    """Reliability case 17: an x509pop agent and a join-token agent are evicted, then restarted.
    The x509pop agent attests again by itself and its workload gets its SVID with no operator
    action; the join-token agent, whose token was spent, stays out; the agent list then holds
    the re-attested agent alone."""
    root = make_ca(name="fleet root")
    node = node_certificate(root, common_name="host-1")
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    server = start_server(
        tmp_path / "server",
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{tmp_path / "roots.pem"}"\n }}\n }}',
    )
    fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    pop_id = f"spiffe://example.org/spire/agent/x509pop/{fingerprint}"
    token = server.join_token()
    token_id = f"spiffe://example.org/spire/agent/join_token/{token}"
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    attestor = (
        'NodeAttestor "x509pop" {\n plugin_data {\n'
        f' private_key_path = "{tmp_path / "node.key"}"\n certificate_path = "{tmp_path / "node.pem"}"\n }}\n }}'
    )
    pop = start_agent(tmp_path / "pop", server, node_attestor=attestor)
    tofu = start_agent(tmp_path / "tofu", server, token)
    try:
        register_this_process(server, pop_id, "spiffe://example.org/pop-workload")
        assert fetched_spiffe_id(pop) == "spiffe://example.org/pop-workload"
        listed = server.cli("agent", "list").stdout
        assert pop_id in listed
        assert token_id in listed

        assert pop.stop() == 0
        assert tofu.stop() == 0
        server.cli("agent", "evict", "-spiffeID", pop_id)
        server.cli("agent", "evict", "-spiffeID", token_id)
        assert server.cli("agent", "list").stdout.count("SPIFFE ID") == 0

        pop.start()
        assert "Node attestation was successful" in pop.log().rsplit("Plugin loaded", 1)[-1]
        assert fetched_spiffe_id(pop) == "spiffe://example.org/pop-workload"
        tofu.start(wait=False)
        assert tofu.process is not None
        assert tofu.process.wait(30) != 0

        listed = server.cli("agent", "list").stdout
        assert pop_id in listed
        assert token_id not in listed
        assert listed.count("SPIFFE ID") == 1, listed
    finally:
        pop.stop()
        tofu.stop()
        server.stop()


def _x509pop_agent(tmp_path: Path, name: str, node: Issued, intermediates: tuple[Issued, ...]) -> str:
    """The agent's NodeAttestor block for ``node`` (and the intermediates above it), its files under ``name``."""
    directory = tmp_path / name
    directory.mkdir()
    (directory / "node.pem").write_bytes(pem(node.certificate))
    (directory / "node.key").write_bytes(key_pem(node.key))
    (directory / "chain.pem").write_bytes(pem(*(i.certificate for i in intermediates)))
    return (
        'NodeAttestor "x509pop" {\n plugin_data {\n'
        f' private_key_path = "{directory / "node.key"}"\n certificate_path = "{directory / "node.pem"}"\n'
        f' intermediates_path = "{directory / "chain.pem"}"\n }}\n }}'
    )


def test_spire_selectors_formats_and_limits_through_the_daemons(tmp_path: Path) -> None:
    """SPIRE's SAN and serial selectors match entries written for SPIRE; its limits are honoured."""
    root = make_ca(name="fleet root without keyUsage", key_usage=False)
    intermediate = make_ca(issuer=root, name="fleet intermediate without keyUsage", key_usage=False)
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "x509pop" {\n plugin_data {\n'
            f' ca_bundle_path = "{tmp_path / "roots.pem"}"\n'
            ' agent_path_template = "/x509pop/{{ .URISanSelectors.host }}"\n'
            " max_intermediates = 1\n max_rsa_key_size = 2048\n verify_client_ip = true\n }\n }"
        ),
    )
    good = node_certificate(intermediate, sans=("x509pop://example.org/host/web-7",), ips=("127.0.0.1",), serial=0xABC)
    elsewhere = node_certificate(intermediate, sans=("x509pop://example.org/host/web-8",), ips=("192.0.2.1",))
    deeper = make_ca(issuer=intermediate, name="second intermediate")
    too_deep = node_certificate(deeper, sans=("x509pop://example.org/host/web-9",), ips=("127.0.0.1",))
    big_key = node_certificate(
        intermediate,
        sans=("x509pop://example.org/host/web-10",),
        ips=("127.0.0.1",),
        key=rsa.generate_private_key(public_exponent=65537, key_size=3072),
    )
    try:
        refused = [
            (start_agent(tmp_path / f"agent-{name}", server, node_attestor=block, wait=False), message)
            for name, block, message in (
                (
                    "elsewhere",
                    _x509pop_agent(tmp_path, "elsewhere", elsewhere, (intermediate,)),
                    "(PERMISSION_DENIED): nodeattestor(x509pop): client IP 127.0.0.1 does not match",
                ),
                (
                    "too-deep",
                    _x509pop_agent(tmp_path, "too-deep", too_deep, (deeper, intermediate)),
                    "(INVALID_ARGUMENT): nodeattestor(x509pop): too many intermediate certificates (2;",
                ),
                (
                    "big-key",
                    _x509pop_agent(tmp_path, "big-key", big_key, (intermediate,)),
                    "nodeattestor(x509pop): leaf certificate key size too large (3072 bits; max_rsa_key_size is 2048)",
                ),
            )
        ]
        server.cli(
            "entry", "create", "-node", "-spiffeID", "spiffe://example.org/node/web",
            "-selector", "x509pop:san:host:web-7", "-selector", "x509pop:serialnumber:0abc",
        )  # fmt: skip
        register_this_process(server, "spiffe://example.org/node/web", "spiffe://example.org/web")
        agent = start_agent(
            tmp_path / "agent-good", server, node_attestor=_x509pop_agent(tmp_path, "good", good, (intermediate,))
        )
        try:
            shown = server.cli("agent", "show", "-spiffeID", "spiffe://example.org/spire/agent/x509pop/web-7").stdout
            assert "Selectors         : x509pop:san:host:web-7" in shown
            assert "Selectors         : x509pop:serialnumber:0abc" in shown
            assert fetched_spiffe_id(agent) == "spiffe://example.org/web"
        finally:
            agent.stop()
        for daemon, message in refused:
            assert daemon.process is not None
            assert daemon.process.wait(30) == 1, daemon.log()
            assert message in daemon.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        server.stop()


def test_purge_deletes_only_agents_that_can_attest_again(tmp_path: Path) -> None:
    # As SPIRE: a join-token agent is never purged, or its spent token would become usable
    # again. Both SVIDs (1 h) expire before "now + 2 h", so a negative -expiredFor selects both.
    root = make_ca(name="fleet root")
    node = node_certificate(root, common_name="host-2")
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    server = start_server(
        tmp_path / "server",
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{tmp_path / "roots.pem"}"\n }}\n }}',
    )
    try:
        attestor = (
            'NodeAttestor "x509pop" {\n plugin_data {\n'
            f' private_key_path = "{tmp_path / "node.key"}"\n certificate_path = "{tmp_path / "node.pem"}"\n'
            " }\n }"
        )
        token = server.join_token()
        # Started together: each attests, and nothing in one depends on the other.
        agents = [
            start_agent(tmp_path / "pop-agent", server, node_attestor=attestor, wait=False),
            start_agent(tmp_path / "token-agent", server, token, wait=False),
        ]
        try:
            for agent in agents:
                agent.wait_ready()
        finally:
            for agent in agents:
                agent.stop()
        fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        pop_id = f"spiffe://example.org/spire/agent/x509pop/{fingerprint}"
        token_id = f"spiffe://example.org/spire/agent/join_token/{token}"

        dry = server.cli("agent", "purge", "-expiredFor=-2h", "-dryRun").stdout
        assert pop_id in dry
        assert token_id not in dry
        server.cli("agent", "purge", "-expiredFor=-2h")
        listed = server.cli("agent", "list").stdout
        assert pop_id not in listed
        assert token_id in listed
    finally:
        server.stop()
