"""A real server whose CA a real OpenBao signs, an agent, a workload whose chain ``openssl`` verifies to OpenBao's root.

OpenBao is reached through a TCP relay, so that an outage is the network going away while
the server keeps running.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe.workloadapi import WorkloadApiClient

from plugins.vault_upstream.tests.openbao import OpenBao, TcpRelay, Tenant
from tests.support.daemons import AgentDaemon, ServerDaemon, server_config, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture
def relay(openbao: OpenBao) -> Iterator[TcpRelay]:
    relay = TcpRelay(openbao.port).start()
    yield relay
    relay.stop()


def vault_plugin(bao: Tenant, url: str) -> str:
    mount, role_id, secret_id = bao.approle()
    return (
        'UpstreamAuthority "vault" {\n plugin_data {\n'
        f'  vault_addr = "{url}"\n'
        f'  ca_cert_path = "{bao.ca_path}"\n'
        f'  pki_mount_point = "{bao.pki_mount}"\n'
        f'  approle_auth {{\n   approle_auth_mount_point = "{mount}"\n'
        f'   approle_id = "{role_id}"\n   approle_secret_id = "{secret_id}"\n  }}\n'
        " }\n}"
    )


def svid_chain(agent: AgentDaemon) -> list[x509.Certificate]:
    async def fetch() -> list[x509.Certificate]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            context = await client.fetch_x509_context()
            return list(context.default_svid.chain)

    return asyncio.run(fetch())


def openssl_verify(chain: list[x509.Certificate], root: x509.Certificate, directory: Path) -> None:
    def pem(certificates: list[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)

    (directory / "root.pem").write_bytes(pem([root]))
    (directory / "untrusted.pem").write_bytes(pem(chain[1:]))
    (directory / "leaf.pem").write_bytes(pem(chain[:1]))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(directory / "root.pem"),
            "-untrusted",
            str(directory / "untrusted.pem"),
            str(directory / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workload_svids_chain_to_openbao_and_survive_an_outage(bao: Tenant, relay: TcpRelay, tmp_path: Path) -> None:
    server: ServerDaemon = start_server(tmp_path / "server", plugins=vault_plugin(bao, relay.url))
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        chain = svid_chain(agent)
        assert len(chain) == 2  # the SVID, then the server's CA that OpenBao signed
        openssl_verify(chain, bao.root, tmp_path)
        assert bao.root.public_bytes(serialization.Encoding.PEM).decode().strip() in server.bundle_pem()

        # OpenBao goes out of reach: asking for the next CA fails with its address in the
        # message, and the current CA keeps signing.
        relay.stop()
        refused = server.cli("localauthority", "x509", "prepare", check=False)
        assert refused.returncode == 1
        assert f"cannot reach {relay.url}" in refused.stderr
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/during-outage")

        # Back: the next CA is OpenBao's again, and once active it signs new SVIDs.
        relay.start()
        new_id = server.x509_authority_id("prepare", "Prepared")
        server.cli("localauthority", "x509", "activate", "-authorityID", new_id)
        assert len(bao.signed()) == 2
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/after-outage", "-write", str(tmp_path))
        minted = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
        assert minted[1] != chain[1]
        openssl_verify(minted, bao.root, tmp_path)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def test_no_svid_outlives_openbaos_root(openbao: OpenBao, tmp_path: Path) -> None:
    # OpenBao signs the server's 24 h CA under a 2 h root (with a warning only): the server
    # uses that CA only until the root ends, so even a 10 h SVID ends with the root.
    bao = Tenant(openbao, root_ttl="2h")
    server = start_server(tmp_path / "server", plugins=vault_plugin(bao, bao.url), ca_ttl="24h")
    try:
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/long", "-ttl", "10h", "-write", str(tmp_path))
        minted = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
        assert minted[1].not_valid_after_utc > bao.root.not_valid_after_utc  # as OpenBao signed it
        assert minted[0].not_valid_after_utc <= bao.root.not_valid_after_utc
        openssl_verify(minted, bao.root, tmp_path)
        log = server.log()
        assert "The upstream CA outlives the chain above it" in log
        assert "after the CA's expiration time" in log  # OpenBao's own warning, passed on
    finally:
        server.stop()


def test_openbao_unreachable_at_start_is_a_clear_error(bao: Tenant, relay: TcpRelay, tmp_path: Path) -> None:
    plugin = vault_plugin(bao, relay.url)
    relay.stop()
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    (tmp_path / "server").mkdir()
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text).start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    log = server.log()
    assert "upstreamauthority(vault)" in log
    assert f"cannot reach {relay.url}" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_rotation_retries_while_openbao_is_down_and_resumes_when_it_returns(
    bao: Tenant, relay: TcpRelay, tmp_path: Path
) -> None:
    # A one-minute CA: the server prepares the next one after 30 s, checking every 10 s.
    server = start_server(tmp_path / "server", plugins=vault_plugin(bao, relay.url), ca_ttl="60s")
    try:
        relay.stop()
        deadline = time.monotonic() + 60
        while "Rotation step failed" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        assert f"cannot reach {relay.url}" in server.log()
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/still-signing")
        relay.start()
        while server.log().count("X509 CA prepared") < 2:
            assert time.monotonic() < deadline + 15, server.log()
            time.sleep(0.5)
        assert len(bao.signed()) == 2
        assert "Traceback" not in server.log()
    finally:
        server.stop()
