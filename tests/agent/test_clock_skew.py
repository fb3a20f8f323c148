"""Clock skew between issuers and verifiers (reliability case 25), with SVIDs from real daemons.

The verifiers here are pyspire's own, given the time a skewed clock would read: X.509-SVIDs are
backdated 10 s (SPIRE's backdate), so a verifier up to 10 s behind accepts a fresh one, one 30 s
behind gets an explicit "not yet valid" until the certificate's window opens; JWT-SVIDs allow
60 s of skew either side (go-jose's leeway) and fail beyond it, by name. (A daemon whose own
clock is skewed needs a faked clock for the process; the agent's side of that is its
rotation, computed from each certificate's own NotBefore/NotAfter: tests/agent/test_cache.py.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspire.spiffe import (
    Bundle,
    BundleSet,
    JwtSvid,
    JwtSvidError,
    TrustDomain,
    X509Svid,
    X509SvidError,
    verify_x509_svid,
)
from pyspire.spiffe.workloadapi import WorkloadApiClient

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

TD = TrustDomain.parse("example.org")
UID = os.getuid()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("skew")
    server = start_server(directory / "server")
    alias = "spiffe://example.org/node/skew"
    agent = start_agent(directory / "agent", server, server.join_token(alias))
    _entry(server, alias, "spiffe://example.org/skewed", f"unix:uid:{UID}", extra=("-jwtSVIDTTL", "60"))
    eventually(lambda: x509_context(agent))
    yield server, agent
    agent.stop()
    server.stop()


def _minted_now(server: ServerDaemon, directory: Path) -> tuple[X509Svid, BundleSet, float, float]:
    started = time.time()
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/minted", "-write", str(directory))
    finished = time.time()
    svid = X509Svid.parse((directory / "svid.pem").read_bytes(), (directory / "key.pem").read_bytes())
    bundles = BundleSet([Bundle.parse_x509(TD, (directory / "bundle.pem").read_bytes())])
    return svid, bundles, started, finished


def test_x509_svids_are_backdated_so_a_verifier_behind_accepts_them_up_to_ten_seconds(
    deployment: tuple[ServerDaemon, AgentDaemon], tmp_path: Path
) -> None:
    server, _ = deployment
    svid, bundles, started, finished = _minted_now(server, tmp_path)
    not_before = svid.leaf.not_valid_before_utc.timestamp()
    assert started - 11 <= not_before <= finished - 9  # 10 s before issuance (to the second)

    def verify_at(moment: float) -> None:
        verify_x509_svid(svid.chain, bundles, now=datetime.fromtimestamp(moment, UTC))

    verify_at(finished - 9)  # a verifier 9 s behind
    with pytest.raises(X509SvidError) as behind:
        verify_at(finished - 30)  # a verifier 30 s behind...
    assert behind.value.code == "not_yet_valid"
    assert "is not valid until" in str(behind.value)
    verify_at(not_before + 1)  # ...accepts it once its clock reaches the window (about 20 s later)
    with pytest.raises(X509SvidError) as ahead:
        verify_at(svid.leaf.not_valid_after_utc.timestamp() + 300)  # five minutes past the end
    assert ahead.value.code == "expired"


def test_jwt_svids_tolerate_sixty_seconds_of_skew_and_say_why_beyond(
    deployment: tuple[ServerDaemon, AgentDaemon],
) -> None:
    _, agent = deployment

    async def fetch() -> tuple[str, BundleSet]:
        async with WorkloadApiClient(agent.address) as client:
            return (await client.fetch_jwt_svids(["skew"]))[0].token, await client.fetch_jwt_bundles()

    token, bundles = asyncio.run(fetch())
    parsed = JwtSvid.parse_insecure(token)
    issued_at = float(parsed.claims["iat"])
    expires_at = parsed.expiry.timestamp()
    assert expires_at - issued_at == pytest.approx(60, abs=1)

    def validate_at(moment: float) -> None:
        JwtSvid.parse_and_validate(token, bundles, ["skew"], now=moment)

    for accepted in (issued_at - 59, issued_at + 30, expires_at + 59):
        validate_at(accepted)
    for moment, code, message in (
        (expires_at + 61, "expired", "token has expired"),
        (expires_at + timedelta(minutes=5).total_seconds(), "expired", "token has expired"),
        (issued_at - 61, "iat_in_future", "issued in the future"),
        (issued_at - timedelta(minutes=5).total_seconds(), "iat_in_future", "issued in the future"),
    ):
        with pytest.raises(JwtSvidError) as refused:
            validate_at(moment)
        assert refused.value.code == code
        assert message in str(refused.value)
