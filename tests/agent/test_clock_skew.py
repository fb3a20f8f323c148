"""Clock skew between issuers and verifiers (reliability case 25), with SVIDs from real daemons.

The verifiers here are pyspire's own, given the time a skewed clock would read: X.509-SVIDs are
backdated 10 s (SPIRE's backdate), so a verifier up to 10 s behind accepts a fresh one, one 30 s
behind gets an explicit "not yet valid" until the certificate's window opens; JWT-SVIDs allow
60 s of skew either side (go-jose's leeway) and fail beyond it, by name. Then real agents whose
own clock is skewed (libfaketime): 30 s behind a new server, 5 minutes behind, 30 s and
5 minutes ahead. The agent's rotation is computed from each certificate's own NotBefore/NotAfter
(tests/agent/test_cache.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
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
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

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


# Daemons whose own clock is skewed: pyspire-agent run under libfaketime (Debian's faketime
# package, installed by .ci/services), the server and the workloads on the machine's clock.

_LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


@pytest.fixture
def skewed_clock() -> Callable[[str], dict[str, str]]:
    """The environment that runs a process with its clock off by an offset such as ``-30s``."""
    if not _LIBFAKETIME:
        message = "libfaketime is not installed (Debian's faketime package; .ci/services installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)

    def environment(offset: str) -> dict[str, str]:
        # The monotonic clock stays the machine's: only the wall clock a verifier reads is skewed.
        return {"LD_PRELOAD": str(_LIBFAKETIME[0]), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    return environment


def _verified_at_real_time(agent: AgentDaemon) -> str:
    context = x509_context(agent)
    chain_id, _ = verify_x509_svid(context.default_svid.chain, context.bundles)
    return str(chain_id)


def test_an_agent_thirty_seconds_behind_a_new_server_waits_out_its_certificate_then_attests(
    tmp_path: Path, skewed_clock: Callable[[str], dict[str, str]]
) -> None:
    """The server's SVID is backdated 10 s: to an agent 30 s behind, a server started just now
    holds a certificate that is not valid for about 20 s more. The agent says so and tries again,
    and attests once its clock reaches the window; its workloads' SVIDs verify on the machine's
    clock (backdated, they are valid to the agent's clock too, 20 s after issuance)."""
    server = start_server(tmp_path / "server")
    alias = "spiffe://example.org/node/behind"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias), wait=False, env=skewed_clock("-30s"))
    try:
        _entry(server, alias, "spiffe://example.org/behind-workload", f"unix:uid:{UID}")
        eventually(lambda: "not yet valid" in agent.log(), timeout=20)
        log = agent.log()
        assert "presented a certificate that is not valid at this host's time" in log
        assert "check this host's clock against the server's" in log
        assert "trust_bundle_path" not in log  # the bundle is right: the clock is not
        assert "Node attestation was successful" not in log
        eventually(lambda: "Node attestation was successful" in agent.log(), timeout=60)
        assert eventually(lambda: _verified_at_real_time(agent), timeout=30) == "spiffe://example.org/behind-workload"
        assert "Traceback" not in agent.log()
    finally:
        agent.stop()
        server.stop()


def test_an_agent_five_minutes_behind_says_not_yet_valid_and_attests_nothing(
    tmp_path: Path, skewed_clock: Callable[[str], dict[str, str]]
) -> None:
    server = start_server(tmp_path / "server")
    agent = start_agent(tmp_path / "agent", server, server.join_token(), wait=False, env=skewed_clock("-5m"))
    try:
        eventually(lambda: "check this host's clock against the server's" in agent.log(), timeout=20)
        assert "certificate is not yet valid" in agent.log()
        assert agent.process is not None
        assert agent.process.poll() is None or agent.process.returncode == 1
        assert "Traceback" not in agent.log()
        assert "No attested agents found" in server.cli("agent", "list").stdout
        assert not (tmp_path / "agent" / "data" / "agent-data.json").exists()
    finally:
        agent.stop()
        server.stop()


def test_agents_ahead_validate_jwts_within_sixty_seconds_of_skew_and_say_expired_beyond(
    tmp_path: Path, skewed_clock: Callable[[str], dict[str, str]]
) -> None:
    """A JWT-SVID minted now (60 s of life) is valid to an agent 30 s ahead (go-jose's 60 s
    leeway); to one 5 minutes ahead it has expired, and ValidateJWTSVID says so."""
    server = start_server(tmp_path / "server")
    agents = {}
    try:
        for name, offset in (("ahead-30s", "+30s"), ("ahead-5m", "+5m")):
            alias = f"spiffe://example.org/node/{name}"
            agents[name] = start_agent(tmp_path / name, server, server.join_token(alias), env=skewed_clock(offset))
            _entry(server, alias, f"spiffe://example.org/{name}-workload", f"unix:uid:{UID}")
        for agent in agents.values():
            eventually(lambda agent=agent: x509_context(agent))
        token = server.cli(
            "jwt", "mint", "-spiffeID", "spiffe://example.org/minted", "-audience", "skew", "-ttl", "60"
        ).stdout.strip()

        async def validate(agent: AgentDaemon) -> str:
            async with WorkloadApiClient(agent.address) as client:
                spiffe_id, _ = await client.validate_jwt_svid(token, "skew")
            return str(spiffe_id)

        assert asyncio.run(validate(agents["ahead-30s"])) == "spiffe://example.org/minted"
        with pytest.raises(WorkloadApiError) as refused:
            asyncio.run(validate(agents["ahead-5m"]))
        assert "INVALID_ARGUMENT" in str(refused.value)
        assert "expired" in str(refused.value)
        for agent in agents.values():
            assert "Traceback" not in agent.log()
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()
