"""Forced rotation through the CLI reaches workloads: prepare, activate, taint, revoke."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from pyspire.spiffe import BundleSet, TrustDomain, verify_x509_svid
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()
JWT_WORKLOAD = "spiffe://example.org/jwt-rotating"


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


def _jwt_authority_id(server: ServerDaemon, verb: str = "show", label: str = "Active", *args: str) -> str:
    """Run ``localauthority jwt <verb>`` and read the key ID listed under ``label``."""
    output = server.cli("localauthority", "jwt", verb, *args).stdout
    section = output.split(f"{label} JWT authority:", 1)[1]
    return section.split("Authority ID: ", 1)[1].split()[0]


def _fetch_jwt(agent: AgentDaemon, audience: str) -> str:
    async def fetch() -> str:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            return (await client.fetch_jwt_svids([audience]))[0].token

    return asyncio.run(fetch())


def _jwt_keys(agent: AgentDaemon) -> Mapping[str, Any]:
    """The JWT authorities of example.org that the agent serves workloads now (FetchJWTBundles)."""

    async def fetch() -> BundleSet:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            return await asyncio.wait_for(client.fetch_jwt_bundles(), 10)

    bundle = asyncio.run(fetch()).get(TrustDomain.parse("example.org"))
    assert bundle is not None
    return bundle.jwt_authorities


def _agent_validates(agent: AgentDaemon, token: str, audience: str) -> str:
    async def validate() -> str:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            spiffe_id, _ = await client.validate_jwt_svid(token, audience)
            return str(spiffe_id)

    return asyncio.run(validate())


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _verifies_now(agent: AgentDaemon, token: str, audience: str) -> None:
    """``token`` validates both through the agent and, by hand, against the JWKS served at this moment."""
    assert _agent_validates(agent, token, audience) == JWT_WORKLOAD
    keys = _jwt_keys(agent)
    assert _kid(token) in keys, f"{_kid(token)} not in the served bundle {sorted(keys)}"
    claims = jwt.decode(token, keys[_kid(token)], algorithms=["ES256", "ES384", "RS256", "PS256"], audience=audience)
    assert claims["sub"] == JWT_WORKLOAD


def test_forced_jwt_authority_rotation_publishes_before_signing_drops_tainted_cached_tokens_and_revoke_rejects(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server")
    alias = "spiffe://example.org/node/jwt-rotation"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
    try:
        _entry(server, alias, JWT_WORKLOAD, f"unix:uid:{UID}")
        # 1. A token from the active key, which `show` lists and the bundle holds alone.
        first = eventually(lambda: _fetch_jwt(agent, "first"))
        old_kid = _jwt_authority_id(server)
        assert _kid(first) == old_kid
        assert set(_jwt_keys(agent)) == {old_kid}
        _verifies_now(agent, first, "first")

        # 2. Prepared: published to workloads before it signs anything.
        new_kid = _jwt_authority_id(server, "prepare", "Prepared")
        assert new_kid != old_kid
        eventually(lambda: set(_jwt_keys(agent)) == {old_kid, new_kid})
        while_prepared = _fetch_jwt(agent, "while-prepared")
        assert _kid(while_prepared) == old_kid
        _verifies_now(agent, while_prepared, "while-prepared")

        # 3. Activated: new tokens carry the new key; the old ones still validate.
        server.cli("localauthority", "jwt", "activate", "-authorityID", new_kid)
        assert _jwt_authority_id(server) == new_kid
        assert _jwt_authority_id(server, "show", "Old") == old_kid
        after_activate = _fetch_jwt(agent, "after-activate")
        assert _kid(after_activate) == new_kid
        _verifies_now(agent, after_activate, "after-activate")
        _verifies_now(agent, first, "first")
        # The agent still hands out its cached token for the first audience: nothing forces it yet.
        assert _fetch_jwt(agent, "first") == first

        refused = server.cli("localauthority", "jwt", "revoke", "-authorityID", new_kid, check=False)
        assert refused.returncode == 1
        assert "invalid authority ID: unable to use current authority" in refused.stderr
        refused = server.cli("localauthority", "jwt", "taint", "-authorityID", "no-such-key", check=False)
        assert refused.returncode == 1
        assert "unexpected authority ID" in refused.stderr
        refused = server.cli("localauthority", "jwt", "revoke", "-authorityID", old_kid, check=False)
        assert refused.returncode == 1  # not before it is tainted
        assert "it is not possible to revoke an untainted key" in refused.stderr

        # 4. Tainted: the agent drops the cached tokens the old key signed, so the first
        # audience gets a fresh token from the new key; the tainted key stays published.
        server.cli("localauthority", "jwt", "taint", "-authorityID", old_kid)

        def reissued_for_first() -> str:
            token = _fetch_jwt(agent, "first")
            return token if token != first else ""

        reissued = eventually(reissued_for_first)
        assert _kid(reissued) == new_kid
        assert set(_jwt_keys(agent)) == {old_kid, new_kid}
        _verifies_now(agent, reissued, "first")
        _verifies_now(agent, first, "first")  # tainted, not revoked: still verifiable

        # 5. Revoked: the old key leaves the bundle served to workloads, its tokens are refused.
        server.cli("localauthority", "jwt", "revoke", "-authorityID", old_kid)
        eventually(lambda: set(_jwt_keys(agent)) == {new_kid})
        with pytest.raises(WorkloadApiError) as rejected:
            _agent_validates(agent, first, "first")
        assert rejected.value.status == "INVALID_ARGUMENT"
        assert f'public key "{old_kid}" not found in trust domain "example.org"' in str(rejected.value)
        with pytest.raises(WorkloadApiError):
            _agent_validates(agent, while_prepared, "while-prepared")
        _verifies_now(agent, reissued, "first")
        _verifies_now(agent, after_activate, "after-activate")
        after_revoke = _fetch_jwt(agent, "after-revoke")
        assert _kid(after_revoke) == new_kid
        _verifies_now(agent, after_revoke, "after-revoke")
    finally:
        agent.stop()
        server.stop()
