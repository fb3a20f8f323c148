"""ValidateJWTSVID on a real agent: which bundles a caller may validate with, and which claims come back.

As SPIRE: a caller validates with its own trust domain's bundle and the bundles its entries
federate with (not every bundle the agent holds for other workloads); a foreign token's claims
are cut to ``sub``, ``aud``, ``exp`` and the agent's ``allowed_foreign_jwt_claims``; ``aud`` is
always a list.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import LocalSigner, sign_jwt
from pyspire.spiffe import Bundle, TrustDomain
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually

UID = os.getuid()
PARTNER = TrustDomain.parse("partner.org")
PARTNER_KEY = ec.generate_private_key(ec.SECP256R1())


def _partner_token(**claims: object) -> str:
    base = {"sub": "spiffe://partner.org/payments", "aud": "billing", "exp": int(time.time()) + 600}
    return sign_jwt({**base, **claims}, LocalSigner(PARTNER_KEY), "partner-key-1")


def _validate(agent: AgentDaemon, token: str, audience: str = "billing") -> dict[str, object]:
    async def call() -> dict[str, object]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            _, claims = await client.validate_jwt_svid(token, audience)
            return claims

    return asyncio.run(call())


def _entry(server: ServerDaemon, parent: str, spiffe_id: str, selector: str, *extra: str) -> str:
    out = server.cli("entry", "create", "-parentID", parent, "-spiffeID", spiffe_id, "-selector", selector, *extra)
    return out.stdout.split("Entry ID         : ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    path = tmp_path_factory.mktemp("partner") / "bundle.json"
    path.write_bytes(Bundle(PARTNER, jwt_authorities={"partner-key-1": PARTNER_KEY.public_key()}).marshal())
    daemon.cli("bundle", "set", "-format", "spiffe", "-id", "spiffe://partner.org", "-path", str(path))
    yield daemon
    daemon.stop()


def test_a_foreign_token_validates_only_for_callers_federating_with_its_trust_domain(
    server: ServerDaemon, tmp_path: Path
) -> None:
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = start_agent(
        tmp_path / "agent", server, server.join_token(alias), extra='allowed_foreign_jwt_claims = ["groups"]'
    )
    try:
        # Another workload's entry federates with partner.org: the agent holds its bundle throughout.
        _entry(server, alias, "spiffe://example.org/other", "unix:uid:54321", "-federatesWith", "spiffe://partner.org")
        mine = _entry(
            server, alias, "spiffe://example.org/web", f"unix:uid:{UID}", "-federatesWith", "spiffe://partner.org"
        )
        token = _partner_token(groups=["admins"], roles=["root"], iat=int(time.time()))
        claims = eventually(lambda: _validate(agent, token))
        assert claims.keys() == {"sub", "aud", "exp", "groups"}
        assert claims["aud"] == ["billing"]
        assert claims["groups"] == ["admins"]
        # The caller's own tokens keep every claim.
        minted = agent.cli("api", "fetch", "jwt", "-audience", "billing", "-output", "json").stdout
        own = _validate(agent, json.loads(minted)[0]["svids"][0]["svid"])
        assert {"sub", "aud", "exp", "iat"} <= own.keys()
        assert own["aud"] == ["billing"]

        # The caller's entry no longer federates with partner.org: its tokens are refused,
        # though the agent still holds the bundle for the other workload.
        server.cli("entry", "delete", "-entryID", mine)
        alone = _entry(server, alias, "spiffe://example.org/web-alone", f"unix:uid:{UID}")

        def refused() -> str:
            try:
                _validate(agent, token)
            except WorkloadApiError as err:
                return str(err)
            raise AssertionError("the foreign token still validates")

        message = eventually(refused)
        assert "INVALID_ARGUMENT" in message
        assert "partner.org" in message

        # A caller with no identity at all gets no bundle of someone else's to validate with.
        server.cli("entry", "delete", "-entryID", alone)
        eventually(lambda: "no identity issued" in agent.cli("api", "fetch", "x509", check=False).stderr)
        message = refused()
        assert "INVALID_ARGUMENT" in message
        assert "partner.org" in message
    finally:
        agent.stop()
