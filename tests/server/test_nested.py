"""Nested SPIRE: a root, a middle and a leaf server in one trust domain, each below the other.

Each downstream server runs beside an agent of the server above it (an entry marked
``downstream``) and gets its CA from there through ``UpstreamAuthority "spire"``. A workload
under the leaf is verified by a workload under the root and the other way round, with X.509
(the leaf's chain runs through both downstream CAs, checked by openssl too) and with JWT
(the leaf's key travels up to the root). While that is checked again and again, every tier
rotates: the leaf on its own short ``ca_ttl``, the root and the middle when the operator
prepares and activates new authorities; the root's next CA reaches the leaf's workloads
before it signs anything.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import BundleSet, TrustDomain, X509Svid, verify_x509_svid
from pyspire.spiffe.workloadapi import WorkloadApiClient, X509Context

from tests.support.daemons import AgentDaemon, Daemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process, x509_context

T = TypeVar("T")
TD = TrustDomain.parse("example.org")
ROOT_WORKLOAD = "spiffe://example.org/root-workload"
LEAF_WORKLOAD = "spiffe://example.org/leaf-workload"


def _upstream(server: ServerDaemon, agent: AgentDaemon) -> str:
    return (
        'UpstreamAuthority "spire" {\n plugin_data {\n'
        f'  server_address = "127.0.0.1"\n  server_port = "{server.port}"\n'
        f'  workload_api_socket = "{agent.socket_path}"\n }}\n}}'
    )


def _agent_of(server: ServerDaemon, directory: Path) -> tuple[AgentDaemon, str]:
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    return start_agent(directory, server, server.join_token(alias)), alias


def _svid(context: X509Context, spiffe_id: str) -> X509Svid:
    return next(s for s in context.svids if str(s.spiffe_id) == spiffe_id)


def _jwt_from_leaf_validated_at_root(leaf: AgentDaemon, root: AgentDaemon) -> str:
    async def check() -> str:
        async with WorkloadApiClient(leaf.address, timeout=10) as client:
            (token,) = await client.fetch_jwt_svids(["root-tier"], LEAF_WORKLOAD)
        async with WorkloadApiClient(root.address, timeout=10) as client:
            spiffe_id, _ = await client.validate_jwt_svid(token.token, "root-tier")
        return str(spiffe_id)

    return asyncio.run(check())


class Tree:
    """The three tiers, their agents, and the checks made across them."""

    def __init__(self, tmp_path: Path) -> None:
        self.daemons: list[Daemon] = []
        try:
            self._grow(tmp_path)
        except BaseException:
            self.stop()  # a tier that failed to start must not leave the others running
            raise

    def _grow(self, tmp_path: Path) -> None:
        self.root = self._keep(start_server(tmp_path / "root-server", ca_ttl="1h"))
        self.root_agent, root_node = self._keep_agent(_agent_of(self.root, tmp_path / "root-agent"))
        # The downstream entry first: it is the oldest, so the middle server's default SVID.
        register_this_process(
            self.root, root_node, "spiffe://example.org/middle-server", "-downstream", "-x509SVIDTTL", "15"
        )
        time.sleep(1.1)
        register_this_process(self.root, root_node, ROOT_WORKLOAD, "-x509SVIDTTL", "15")
        eventually(lambda: x509_context(self.root_agent), timeout=60)

        self.middle = self._keep(
            start_server(tmp_path / "middle-server", ca_ttl="1h", plugins=_upstream(self.root, self.root_agent))
        )
        self.middle_agent, middle_node = self._keep_agent(_agent_of(self.middle, tmp_path / "middle-agent"))
        register_this_process(
            self.middle, middle_node, "spiffe://example.org/leaf-server", "-downstream", "-x509SVIDTTL", "15"
        )
        eventually(lambda: x509_context(self.middle_agent), timeout=60)

        self.leaf = self._keep(
            start_server(tmp_path / "leaf-server", ca_ttl="60s", plugins=_upstream(self.middle, self.middle_agent))
        )
        self.leaf_agent, leaf_node = self._keep_agent(_agent_of(self.leaf, tmp_path / "leaf-agent"))
        register_this_process(self.leaf, leaf_node, LEAF_WORKLOAD, "-x509SVIDTTL", "15")

    def _keep(self, daemon: ServerDaemon) -> ServerDaemon:
        self.daemons.append(daemon)
        return daemon

    def _keep_agent(self, made: tuple[AgentDaemon, str]) -> tuple[AgentDaemon, str]:
        self.daemons.append(made[0])
        return made

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()

    def cross_check(self) -> tuple[X509Svid, X509Svid]:
        """Each side's SVID verifies with the other side's bundle; (leaf SVID, root SVID)."""
        leaf_context, root_context = x509_context(self.leaf_agent), x509_context(self.root_agent)
        leaf_svid, root_svid = _svid(leaf_context, LEAF_WORKLOAD), _svid(root_context, ROOT_WORKLOAD)
        verify_x509_svid(leaf_svid.chain, BundleSet([root_context.bundles.get(TD)]))  # type: ignore[list-item]
        verify_x509_svid(root_svid.chain, BundleSet([leaf_context.bundles.get(TD)]))  # type: ignore[list-item]
        return leaf_svid, root_svid


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    made = Tree(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def _openssl_verifies(svid: X509Svid, roots: list[x509.Certificate], directory: Path) -> None:
    pem = serialization.Encoding.PEM
    (directory / "leaf.pem").write_bytes(svid.chain[0].public_bytes(pem))
    (directory / "chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in svid.chain[1:]))
    (directory / "roots.pem").write_bytes(b"".join(c.public_bytes(pem) for c in roots))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "roots.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_three_tier_tree_verifies_across_tiers_while_every_tier_rotates(tree: Tree, tmp_path: Path) -> None:
    leaf_svid, _ = eventually(tree.cross_check, timeout=60)
    assert len(leaf_svid.chain) == 3  # the SVID, the leaf server's CA, the middle server's CA
    root_bundle = x509_context(tree.root_agent).bundles.get(TD)
    assert root_bundle is not None
    _openssl_verifies(leaf_svid, list(root_bundle.x509_authorities), tmp_path)
    assert (
        eventually(lambda: _jwt_from_leaf_validated_at_root(tree.leaf_agent, tree.root_agent), timeout=60)
        == LEAF_WORKLOAD
    )

    first_leaf_ca = tree.leaf.x509_authority_id()
    first_root_ca = tree.root.x509_authority_id()
    seen_leaf_serials = {leaf_svid.leaf.serial_number}

    # The root prepares its next CA: it must reach the leaf's workloads before it is used.
    next_root_ca = tree.root.x509_authority_id("prepare", "Prepared")

    def leaf_trusts_the_next_root() -> bool:
        bundle = x509_context(tree.leaf_agent).bundles.get(TD)
        return bundle is not None and next_root_ca in {_ski(c) for c in bundle.x509_authorities}

    eventually(leaf_trusts_the_next_root, timeout=45)
    tree.root.cli("localauthority", "x509", "activate", "-authorityID", next_root_ca)
    # The middle re-keys under the new root too.
    middle_next = tree.middle.x509_authority_id("prepare", "Prepared")
    tree.middle.cli("localauthority", "x509", "activate", "-authorityID", middle_next)
    # The root retires its JWT key. Servers below hold it too: none may publish it back.
    old_jwt = _authority_id(tree.root.cli("localauthority", "jwt", "show").stdout, "Active JWT authority")
    new_jwt = _authority_id(tree.root.cli("localauthority", "jwt", "prepare").stdout, "Prepared JWT authority")
    tree.root.cli("localauthority", "jwt", "activate", "-authorityID", new_jwt)
    tree.root.cli("localauthority", "jwt", "taint", "-authorityID", old_jwt)
    tree.root.cli("localauthority", "jwt", "revoke", "-authorityID", old_jwt)

    # Keep checking across the tree while SVIDs (15 s) and the leaf CA (60 s) rotate.
    deadline = time.monotonic() + 70
    while time.monotonic() < deadline:
        leaf_svid, root_svid = eventually(tree.cross_check, timeout=10)
        seen_leaf_serials.add(leaf_svid.leaf.serial_number)
        if tree.leaf.x509_authority_id() != first_leaf_ca and _issued_by(root_svid, next_root_ca):
            break
        time.sleep(3)
    assert tree.root.x509_authority_id() == next_root_ca != first_root_ca
    assert tree.leaf.x509_authority_id() != first_leaf_ca
    assert _issued_by(eventually(tree.cross_check, timeout=60)[1], next_root_ca)
    assert len(seen_leaf_serials) > 1
    assert old_jwt not in tree.root.cli("bundle", "show", "-format", "spiffe").stdout  # several steps later
    assert (
        eventually(lambda: _jwt_from_leaf_validated_at_root(tree.leaf_agent, tree.root_agent), timeout=60)
        == LEAF_WORKLOAD
    )


def _authority_id(output: str, label: str) -> str:
    return output.split(f"{label}:", 1)[1].split("Authority ID: ", 1)[1].split(maxsplit=1)[0]


def _ski(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def _issued_by(svid: X509Svid, authority_id: str) -> bool:
    identifier = svid.chain[-1].extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return identifier.key_identifier is not None and identifier.key_identifier.hex() == authority_id


@pytest.mark.slow
def test_a_restarted_downstream_server_still_sees_its_siblings_key_changes(tmp_path: Path) -> None:
    """Reliability case 22, the downstream side (SPIRE's nested-rotation 11-rotation-after-restart):
    two servers below one root; one is restarted, then the other rotates its JWT authority. The
    new key travels up to the root and down again into the restarted server's bundle, so that
    server's subscription to the root's bundle came back with it."""
    daemons: list[Daemon] = []
    try:
        root = start_server(tmp_path / "root-server", ca_ttl="1h")
        daemons.append(root)
        root_agent, root_node = _agent_of(root, tmp_path / "root-agent")
        daemons.append(root_agent)
        register_this_process(root, root_node, "spiffe://example.org/downstream", "-downstream")
        eventually(lambda: x509_context(root_agent), timeout=60)
        sibling, restarted = (
            start_server(tmp_path / f"{name}-server", ca_ttl="1h", plugins=_upstream(root, root_agent))
            for name in ("sibling", "restarted")
        )
        daemons += [sibling, restarted]
        for server in (sibling, restarted):  # both trust the root's CA, as their intermediates chain to it
            assert server.bundle_pem() == root.bundle_pem()

        restarted.stop()
        restarted.start()

        prepared = _authority_id(sibling.cli("localauthority", "jwt", "prepare").stdout, "Prepared JWT authority")
        assert prepared not in restarted.cli("bundle", "show", "-format", "spiffe").stdout
        sibling.cli("localauthority", "jwt", "activate", "-authorityID", prepared)

        def restarted_holds(key_id: str) -> bool:
            return key_id in restarted.cli("bundle", "show", "-format", "spiffe").stdout

        assert eventually(lambda: restarted_holds(prepared), timeout=60)
        assert prepared in root.cli("bundle", "show", "-format", "spiffe").stdout
        assert restarted.process is not None
        assert restarted.process.poll() is None
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
