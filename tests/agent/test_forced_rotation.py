"""Forced rotation through the CLI reaches workloads: prepare, activate, taint, revoke."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from pyspire.spiffe import verify_x509_svid

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()


def _ski(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def test_taint_makes_agents_reissue_and_revoke_removes_the_old_ca(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    alias = "spiffe://example.org/node/rotation"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
    try:
        _entry(server, alias, "spiffe://example.org/rotating", f"unix:uid:{UID}")
        before = eventually(lambda: x509_context(agent))
        old_id = server.x509_authority_id()

        new_id = server.x509_authority_id("prepare", "Prepared")
        assert new_id != old_id
        # Prepared authorities are published before they sign anything.
        eventually(
            lambda: (
                len(x509_context(agent).bundles.get(before.default_svid.spiffe_id.trust_domain).x509_authorities) == 2
            )
        )

        server.cli("localauthority", "x509", "activate", "-authorityID", new_id)
        refused = server.cli("localauthority", "x509", "revoke", "-authorityID", old_id, check=False)
        assert refused.returncode == 1  # not before it is tainted

        server.cli("localauthority", "x509", "taint", "-authorityID", old_id)

        def reissued_by_new_ca():  # type: ignore[no-untyped-def]
            context = x509_context(agent)
            issuer_ski = context.default_svid.leaf.extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier
            ).value.key_identifier.hex()
            return context if issuer_ski == new_id.lower() else None

        after_taint = eventually(reissued_by_new_ca, timeout=30)
        verify_x509_svid(after_taint.default_svid.chain, after_taint.bundles)

        server.cli("localauthority", "x509", "revoke", "-authorityID", old_id)
        trust_domain = before.default_svid.spiffe_id.trust_domain

        def old_ca_gone():  # type: ignore[no-untyped-def]
            authorities = x509_context(agent).bundles.get(trust_domain).x509_authorities
            return authorities if all(_ski(a) != old_id.lower() for a in authorities) else None

        remaining = eventually(old_ca_gone, timeout=30)
        assert [_ski(a) for a in remaining] == [new_id.lower()]
        assert len(x509.load_pem_x509_certificates(server.bundle_pem().encode())) == 1

        # The agent renewed its own SVID when its CA was tainted, so it still reaches the server
        # once that CA is revoked (regression: it kept the old one and lost the server).
        _entry(server, alias, "spiffe://example.org/after-revoke", f"unix:uid:{UID}")
        eventually(
            lambda: "spiffe://example.org/after-revoke" in [str(s.spiffe_id) for s in x509_context(agent).svids],
            timeout=30,
        )
    finally:
        agent.stop()
        server.stop()
