"""A real server whose CA a real OpenBao signs, an agent, a workload whose chain ``openssl`` verifies to OpenBao's root.

OpenBao is reached through a TCP relay, so that an outage is the network going away while
the server keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import TrustDomain, verify_x509_svid
from pyspire.spiffe.workloadapi import WorkloadApiClient

from plugins.vault_upstream.tests.openbao import OpenBao, TcpRelay, Tenant
from tests.support.daemons import AgentDaemon, ServerDaemon, server_config, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process, x509_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture
def relay(openbao: OpenBao) -> Iterator[TcpRelay]:
    relay = TcpRelay(openbao.port).start()
    yield relay
    relay.stop()


def vault_plugin(bao: Tenant, url: str, *, token_ttl: str = "1h") -> str:
    mount, role_id, secret_id = bao.approle(token_ttl=token_ttl)
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


def openssl_verify(
    chain: list[x509.Certificate], root: x509.Certificate | list[x509.Certificate], directory: Path
) -> None:
    """``openssl verify`` the chain (leaf first) to ``root`` (or to any of a list of roots: a bundle)."""

    def pem(certificates: list[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)

    (directory / "root.pem").write_bytes(pem(root if isinstance(root, list) else [root]))
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


def key_id(certificate: x509.Certificate) -> str:
    """The subject key identifier in hex, as SPIRE's CLI takes and shows it."""
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def issuer_key_id(certificate: x509.Certificate) -> str:
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None
    return aki.hex()


def served(agent: AgentDaemon, directory: Path) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The workload's SVID chain and the bundle the agent serves with it (one answer), checked against each other.

    Both pyspire's verifier and ``openssl`` must accept the chain against that bundle: a
    workload never holds an SVID its peers, who get the same bundle, cannot verify.
    """
    context = x509_context(agent)
    chain = list(context.default_svid.chain)
    bundle = context.bundles.get(TrustDomain("example.org"))
    assert bundle is not None
    roots = list(bundle.x509_authorities)
    verify_x509_svid(chain, context.bundles)
    openssl_verify(chain, roots, directory)
    return chain, roots


def server_bundle(server: ServerDaemon) -> dict[bytes, bool]:
    """The server's X.509 authorities (DER) and whether each is tainted."""
    shown = json.loads(server.cli("bundle", "show", "-output", "json").stdout)
    return {base64.b64decode(a["asn1"]): bool(a.get("tainted")) for a in shown["x509_authorities"]}


def authorities(server: ServerDaemon) -> dict[str, dict[str, str]]:
    return json.loads(server.cli("localauthority", "x509", "show", "-output", "json").stdout)  # type: ignore[no-any-return]


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.mark.slow
def test_forced_rotation_to_a_new_openbao_root_after_a_token_renewal(bao: Tenant, tmp_path: Path) -> None:
    # A 9 s AppRole token: the plugin renews it every 6 s (at two thirds), for the whole test.
    server = start_server(tmp_path / "server", plugins=vault_plugin(bao, bao.url, token_ttl="9s"))
    agent = None
    old_root = bao.root
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        first, roots = served(agent, tmp_path)
        assert [der(r) for r in roots] == [der(old_root)]
        openssl_verify(first, old_root, tmp_path)

        # 1. OpenBao answers two renewals of the token before anything is rotated: the second
        # comes after the 9 s the login gave, so the first one really extended the token.
        def answered() -> list[str]:
            return [f"{r.operation} {r.path}" for r in bao.requests(answered=True)]

        renew = "update auth/token/renew-self"
        deadline = time.monotonic() + 25
        while answered().count(renew) < 2:
            assert time.monotonic() < deadline, answered()
            assert served(agent, tmp_path)[0] == first
            time.sleep(0.5)
        login = f"update auth/approle-{bao.name}/login"
        assert answered().count(login) == 1
        assert len(bao.signed()) == 1

        # 2. OpenBao's PKI mount gets a second root (same name, new key), made its default
        # issuer: the next sign-intermediate is signed by it.
        admin = bao.admin()
        rotated = admin.write(
            f"{bao.pki_mount}/root/rotate/internal", common_name=f"{bao.name} root", issuer_name="next", ttl="8760h"
        )["data"]
        admin.write(f"{bao.pki_mount}/config/issuers", default=rotated["issuer_id"])
        new_root = x509.load_pem_x509_certificate(rotated["certificate"].encode())
        old_key, new_key = key_id(old_root), key_id(new_root)
        assert old_key != new_key
        assert new_root.subject == old_root.subject

        # 3. Prepare: the next CA is OpenBao's new root's (signed with the renewed token, no
        # second login), and that root is in the server's bundle beside the old one.
        prepared_id = server.x509_authority_id("prepare", "Prepared")
        state = authorities(server)
        assert state["prepared"]["upstream_authority_subject_key_id"] == new_key
        assert state["active"]["upstream_authority_subject_key_id"] == old_key
        old_local_id = state["active"]["authority_id"]
        paths = answered()
        assert paths.count(login) == 1
        signings = [i for i, p in enumerate(paths) if p.endswith(f"{bao.pki_mount}/root/sign-intermediate")]
        assert len(signings) == 2
        assert [i for i, p in enumerate(paths) if p == renew][1] < signings[1]
        assert server_bundle(server) == {der(old_root): False, der(new_root): False}
        pem = server.bundle_pem()
        for root in (old_root, new_root):
            assert root.public_bytes(serialization.Encoding.PEM).decode().strip() in pem
        # The agent hands the new root to its workloads before any SVID chains to it.
        deadline = time.monotonic() + 15
        while True:
            chain, roots = served(agent, tmp_path)
            assert chain == first
            if der(new_root) in {der(r) for r in roots}:
                break
            assert time.monotonic() < deadline, roots
            time.sleep(0.25)

        # Activate: new SVIDs chain to the new root; the workload keeps its (still trusted) one.
        server.cli("localauthority", "x509", "activate", "-authorityID", prepared_id)
        state = authorities(server)
        assert state["active"]["authority_id"] == prepared_id
        assert state["active"]["upstream_authority_subject_key_id"] == new_key
        assert state["old"]["upstream_authority_subject_key_id"] == old_key
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/after-activate", "-write", str(tmp_path))
        minted = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
        assert key_id(minted[1]) == prepared_id
        openssl_verify(minted, new_root, tmp_path)
        assert served(agent, tmp_path)[0] == first

        # 6. With an upstream, the local authority is neither tainted nor revoked (SPIRE's refusals).
        for verb, done in (("taint", "tainted"), ("revoke", "revoked")):
            refused = server.cli("localauthority", "x509", verb, "-authorityID", old_local_id, check=False)
            assert refused.returncode == 1, refused
            assert refused.stderr.strip() == (
                "Error: rpc error: code = FailedPrecondition "
                f"desc = local authority can't be {done} if there is an upstream authority"
            )
        assert server_bundle(server) == {der(old_root): False, der(new_root): False}

        # 4. Taint the old OpenBao root: the agent replaces the workload's SVID with one of the
        # new CA's, and the server its own SVID.
        # As in SPIRE, the key ID is taken in either case (openssl prints it in upper case).
        tainted = server.cli("upstreamauthority", "taint", "-subjectKeyID", old_key.upper())
        assert f"Subject Key ID: {old_key}\n" in tainted.stdout
        assert server_bundle(server) == {der(old_root): True, der(new_root): False}
        deadline = time.monotonic() + 20
        while True:
            chain, roots = served(agent, tmp_path)
            if chain != first:
                break
            assert time.monotonic() < deadline, agent.log()[-3000:]
            time.sleep(0.25)
        assert key_id(chain[1]) == prepared_id
        openssl_verify(chain, new_root, tmp_path)
        server_leaf = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", server.port)).encode())
        assert issuer_key_id(server_leaf) == prepared_id

        # 5. Revoke it: it leaves the server's bundle, then the agent's; the workload's SVID
        # verifies throughout, and the agent keeps talking to the server.
        revoked = server.cli("upstreamauthority", "revoke", "-subjectKeyID", old_key)
        assert f"Subject Key ID: {old_key}" in revoked.stdout
        assert server_bundle(server) == {der(new_root): False}
        assert old_root.public_bytes(serialization.Encoding.PEM).decode().strip() not in server.bundle_pem()
        deadline = time.monotonic() + 15
        while True:
            after, roots = served(agent, tmp_path)
            assert after == chain
            if [der(r) for r in roots] == [der(new_root)]:
                break
            assert time.monotonic() < deadline, roots
            time.sleep(0.25)
        openssl_verify(after, new_root, tmp_path)
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/after-revoke")
        deadline = time.monotonic() + 15
        while len(x509_context(agent).svids) < 2:
            assert time.monotonic() < deadline, agent.log()[-3000:]
            time.sleep(0.25)
        for svid in x509_context(agent).svids:
            openssl_verify(list(svid.chain), new_root, tmp_path)
        assert answered().count(login) == 1  # the one token, renewed all along
        assert "Could not renew the Vault token" not in server.log()
        assert "Traceback" not in server.log() + agent.log()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
