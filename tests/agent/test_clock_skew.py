"""Clock skew between issuers and verifiers (reliability case 25), with SVIDs from real daemons.

The verifiers here are pyspire's own, given the time a skewed clock would read: X.509-SVIDs are
backdated 10 s (SPIRE's backdate), so a verifier up to 10 s behind accepts a fresh one, one 30 s
behind gets an explicit "not yet valid" until the certificate's window opens; JWT-SVIDs allow
60 s of skew either side (go-jose's leeway) and fail beyond it, by name. Then real agents whose
own clock is skewed (libfaketime): 30 s behind a new server, 5 minutes behind, 30 s and
5 minutes ahead. The agent's rotation is computed from each certificate's own NotBefore/NotAfter
(tests/agent/test_cache.py). Last, servers whose clock is skewed, with the agents and the
verifier (this process) on the machine's clock: 30 s ahead, 30 s behind, 5 minutes either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
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
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError, X509Context

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


def _require_libfaketime() -> None:
    if not _LIBFAKETIME:
        message = "libfaketime is not installed (Debian's faketime package; .ci/services installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _faketime_environment(offset: str) -> dict[str, str]:
    # The monotonic clock stays the machine's: only the wall clock a verifier reads is skewed.
    return {"LD_PRELOAD": str(_LIBFAKETIME[0]), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture
def skewed_clock() -> Callable[[str], dict[str, str]]:
    """The environment that runs a process with its clock off by an offset such as ``-30s``."""
    _require_libfaketime()
    return _faketime_environment


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


# Servers whose own clock is skewed (pyspire-server under libfaketime); their agents and this
# process, the verifier, read the machine's clock. One server per scenario; the one 30 s ahead
# serves the module's first and last tests, so that the 20 s its workloads' SVIDs still take to
# become valid once its agent has attested pass while the other scenarios run.

SKEW = 30
"""Seconds the servers of the first two scenarios are ahead or behind."""
BACKDATE = 10
"""Seconds the server backdates each X.509 certificate's NotBefore (SPIRE's backdate)."""


@contextlib.contextmanager
def _skewed_server(
    directory: Path, name: str, offset: str, extra: str = ""
) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    """A server whose clock is off by ``offset``, an agent on the machine's clock, and an entry for this uid."""
    _require_libfaketime()
    server = start_server(directory / "server", env=_faketime_environment(offset), extra=extra)
    try:
        alias = f"spiffe://example.org/node/{name}"
        agent = start_agent(directory / "agent", server, server.join_token(alias), wait=False)
        try:
            _entry(server, alias, f"spiffe://example.org/{name}", f"unix:uid:{UID}", extra=("-jwtSVIDTTL", "60"))
            yield server, agent
        finally:
            agent.stop()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server_ahead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    with _skewed_server(tmp_path_factory.mktemp("server-ahead"), "server-ahead", f"+{SKEW}s") as deployment:
        yield deployment


@pytest.fixture
def server_behind(tmp_path: Path) -> Iterator[tuple[ServerDaemon, AgentDaemon]]:
    # A 90 s SVID, backdated 10 s and 30 s early to the agent's clock, reaches half its life 10 s
    # after it is signed (at 60 s it would already be past half its life when it arrives).
    extra = 'default_x509_svid_ttl = "90s"'
    with _skewed_server(tmp_path, "server-behind", f"-{SKEW}s", extra) as deployment:
        yield deployment


@pytest.fixture
def servers_five_minutes_off(tmp_path: Path) -> Iterator[dict[str, tuple[ServerDaemon, AgentDaemon]]]:
    with (
        _skewed_server(tmp_path / "ahead", "five-ahead", "+5m") as ahead,
        _skewed_server(tmp_path / "behind", "five-behind", "-5m") as behind,
    ):
        yield {"ahead": ahead, "behind": behind}


def _logged_at(log: str, message: str) -> list[float]:
    """When (the log's own timestamps, POSIX seconds) the lines holding ``message`` were written."""
    return [
        datetime.fromisoformat(line.split('time="', 1)[1].split('"', 1)[0]).timestamp()
        for line in log.splitlines()
        if message in line
    ]


def _mint_jwt(server: ServerDaemon, ttl: int) -> str:
    return server.cli(
        "jwt", "mint", "-spiffeID", "spiffe://example.org/minted", "-audience", "skew", "-ttl", str(ttl)
    ).stdout.strip()


def _validated_by_agent(agent: AgentDaemon, token: str) -> tuple[str, BundleSet]:
    """ValidateJWTSVID of ``token`` at ``agent`` (the SPIFFE ID it names), and the agent's JWT bundles."""

    async def validate() -> tuple[str, BundleSet]:
        async with WorkloadApiClient(agent.address) as client:
            bundles = await client.fetch_jwt_bundles()
            spiffe_id, _ = await client.validate_jwt_svid(token, "skew")
        return str(spiffe_id), bundles

    return asyncio.run(validate())


def _no_traceback(*daemons: ServerDaemon | AgentDaemon) -> None:
    for daemon in daemons:
        assert "Traceback" not in daemon.log(), daemon.log()


@pytest.mark.slow
def test_a_server_thirty_seconds_ahead_is_refused_by_name_until_its_certificate_is_valid(
    server_ahead: tuple[ServerDaemon, AgentDaemon],
) -> None:
    """Backdated 10 s from a clock 30 s ahead, the server's certificate starts 20 s in the
    agent's future: the agent says its clock does not fit the server's, retries, and attests
    only once the certificate is valid. The SVIDs it then gets start 20 s later still: the agent
    hands them out as they come (pyspire checks no NotBefore, nor does SPIRE's agent); a verifier
    on the machine's clock refuses them as not yet valid. JWT-SVIDs issued 30 s in the future
    are inside the 60 s leeway: the agent and this process accept them."""
    server, agent = server_ahead
    pem = ssl.get_server_certificate(("127.0.0.1", server.port))
    valid_from = x509.load_pem_x509_certificate(pem.encode()).not_valid_before_utc.timestamp()

    eventually(lambda: "Node attestation was successful" in agent.log(), timeout=60)
    log = agent.log()
    refused = _logged_at(log, "The server cannot be trusted; retrying")
    attested = _logged_at(log, "Node attestation was successful")
    assert refused
    assert valid_from - refused[0] > 10  # the first try, about 20 s before the certificate's window
    assert all(moment < valid_from for moment in refused)  # refused only while it was not yet valid...
    assert attested[0] >= valid_from  # ...and trusted only once it was
    for line in log.splitlines():
        if "The server cannot be trusted" in line:
            assert "presented a certificate that is not valid at this host's time" in line
            assert "certificate is not yet valid" in line
            assert "check this host's clock against the server's" in line
    assert "does not chain to the agent's trust bundle" not in log  # the bundle is right: the clock is not

    context = eventually(lambda: x509_context(agent), timeout=10)
    handed_out_at = time.time()
    svid = context.default_svid
    not_before = svid.leaf.not_valid_before_utc.timestamp()
    assert str(svid.spiffe_id) == "spiffe://example.org/server-ahead"
    assert not_before - attested[0] == pytest.approx(SKEW - BACKDATE, abs=3)
    assert not_before > handed_out_at  # handed out before it is valid on the agent's own clock
    with pytest.raises(X509SvidError) as early:
        verify_x509_svid(svid.chain, context.bundles)
    assert early.value.code == "not_yet_valid"
    assert "is not valid until" in str(early.value)

    token = _mint_jwt(server, 60)
    issued_at = float(JwtSvid.parse_insecure(token).claims["iat"])
    assert issued_at - time.time() > SKEW - 10  # issued in this host's future
    spiffe_id, bundles = _validated_by_agent(agent, token)
    assert spiffe_id == "spiffe://example.org/minted"
    JwtSvid.parse_and_validate(token, bundles, ["skew"])  # this process, on the machine's clock
    _no_traceback(server, agent)


@pytest.mark.slow
def test_svids_of_a_server_thirty_seconds_behind_rotate_before_they_expire_and_its_jwts_validate_within_leeway(
    server_behind: tuple[ServerDaemon, AgentDaemon],
) -> None:
    """To the agent's clock a 90 s SVID of a server 30 s behind starts 40 s before it is signed
    and ends 60 s after: the agent renews it at half of that window (10 s after it is signed),
    well before it expires, because the threshold comes from the certificate's own NotBefore and
    NotAfter. A JWT-SVID of 20 s has expired on the machine's clock when it is minted, by 10 s:
    inside the 60 s leeway, the agent and this process still accept it."""
    server, agent = server_behind
    context = eventually(lambda: x509_context(agent), timeout=30)
    first = context.default_svid.leaf
    verify_x509_svid(context.default_svid.chain, context.bundles)  # on the machine's clock
    start, end = first.not_valid_before_utc.timestamp(), first.not_valid_after_utc.timestamp()
    assert end - start == pytest.approx(90 + BACKDATE, abs=1)
    assert end - time.time() <= 90 - SKEW + 1  # it ends 30 s early to this clock

    def rotated() -> tuple[X509Svid, BundleSet, float] | None:
        context = x509_context(agent)
        if context.default_svid.leaf.serial_number == first.serial_number:
            return None
        return context.default_svid, context.bundles, time.time()

    second, bundles, seen_at = eventually(rotated, timeout=30, interval=0.25)
    verify_x509_svid(second.chain, bundles)
    assert str(second.spiffe_id) == "spiffe://example.org/server-behind"
    assert seen_at < end - 30  # renewed well before the old one expired on the machine's clock
    signed_at = second.leaf.not_valid_before_utc.timestamp() + BACKDATE + SKEW  # on the machine's clock
    half_life = start + (end - start) / 2
    assert half_life - 1 <= signed_at <= half_life + 10  # at half the certificate's own window
    eventually(lambda: "Agent SVID renewed" in agent.log(), timeout=20)  # the agent's own SVID too

    token = _mint_jwt(server, 20)
    expires_at = JwtSvid.parse_insecure(token).expiry.timestamp()
    assert expires_at < time.time()  # already past its exp on the machine's clock
    spiffe_id, jwt_bundles = _validated_by_agent(agent, token)
    assert spiffe_id == "spiffe://example.org/minted"
    JwtSvid.parse_and_validate(token, jwt_bundles, ["skew"])
    with pytest.raises(JwtSvidError) as beyond:
        JwtSvid.parse_and_validate(token, jwt_bundles, ["skew"], now=expires_at + 61)
    assert beyond.value.code == "expired"  # it is the leeway that carried it
    assert "level=error" not in agent.log()
    _no_traceback(server, agent)


def test_servers_five_minutes_off_get_explicit_time_errors_and_nothing_accepted_silently(
    servers_five_minutes_off: dict[str, tuple[ServerDaemon, AgentDaemon]],
) -> None:
    """Five minutes ahead, the server's certificate is not valid to the agent for almost five
    minutes: the agent names the clock and attests nothing (no node record, no Workload API),
    and a JWT-SVID of that server is refused as issued in the future. Five minutes behind, the
    agent attests (X.509-SVIDs start 5 minutes 10 s before they are signed and last an hour) but
    the server's 60 s JWT-SVIDs have expired 4 minutes before they are minted: the agent hands
    one out (no validity check, as SPIRE's) and ValidateJWTSVID refuses it as expired."""
    ahead, ahead_agent = servers_five_minutes_off["ahead"]
    behind, behind_agent = servers_five_minutes_off["behind"]

    eventually(lambda: "check this host's clock against the server's" in ahead_agent.log(), timeout=20)
    log = ahead_agent.log()
    assert "presented a certificate that is not valid at this host's time" in log
    assert "certificate is not yet valid" in log
    assert "Node attestation was successful" not in log
    assert "No attested agents found" in ahead.cli("agent", "list").stdout
    assert not ahead_agent.socket_path.exists()  # no Workload API: nothing to hand out
    assert ahead_agent.process is not None
    assert ahead_agent.process.poll() in (None, 1)  # retrying, or stopped with the reason after a minute
    ahead_bundles = BundleSet([Bundle.parse(TD, ahead.cli("bundle", "show", "-format", "spiffe").stdout)])
    with pytest.raises(JwtSvidError) as future:
        JwtSvid.parse_and_validate(_mint_jwt(ahead, 60), ahead_bundles, ["skew"])
    assert future.value.code == "iat_in_future"
    assert "issued in the future" in str(future.value)

    context = eventually(lambda: x509_context(behind_agent), timeout=30)
    chain_id, _ = verify_x509_svid(context.default_svid.chain, context.bundles)
    assert str(chain_id) == "spiffe://example.org/five-behind"

    async def fetch() -> str:
        async with WorkloadApiClient(behind_agent.address) as client:
            return (await client.fetch_jwt_svids(["skew"]))[0].token

    handed_out = asyncio.run(fetch())
    assert JwtSvid.parse_insecure(handed_out).expiry.timestamp() < time.time() - 200  # expired on arrival
    for token in (handed_out, _mint_jwt(behind, 60)):
        with pytest.raises(WorkloadApiError) as refused:
            _validated_by_agent(behind_agent, token)
        assert "INVALID_ARGUMENT" in str(refused.value)
        assert "token has expired" in str(refused.value)
        behind_bundles = BundleSet([Bundle.parse(TD, behind.cli("bundle", "show", "-format", "spiffe").stdout)])
        with pytest.raises(JwtSvidError) as expired:
            JwtSvid.parse_and_validate(token, behind_bundles, ["skew"])
        assert expired.value.code == "expired"
    assert behind_agent.process is not None
    assert behind_agent.process.poll() is None
    _no_traceback(ahead, ahead_agent, behind, behind_agent)


@pytest.mark.slow
def test_svids_of_a_server_thirty_seconds_ahead_verify_on_the_machine_clock_from_their_not_before(
    server_ahead: tuple[ServerDaemon, AgentDaemon],
) -> None:
    """The same workload SVID, fetched and verified on the machine's clock until it verifies:
    refused as not yet valid only before its NotBefore, accepted only from then on."""
    server, agent = server_ahead
    deadline = time.monotonic() + 90  # alone: ~25 s to attest, then 20 s more
    while True:
        try:
            context = x509_context(agent)
        except (WorkloadApiError, OSError, TimeoutError):
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.5)
            continue
        not_before = context.default_svid.leaf.not_valid_before_utc.timestamp()
        before = time.time()
        outcome = _verification(context)
        if isinstance(outcome, X509SvidError):
            assert outcome.code == "not_yet_valid"
            assert before < not_before  # refused only before its NotBefore
            assert time.monotonic() < deadline
            time.sleep(0.25)
            continue
        assert time.time() >= not_before  # accepted only from then on
        break
    assert outcome == "spiffe://example.org/server-ahead"
    _no_traceback(server, agent)


def _verification(context: X509Context) -> str | X509SvidError:
    """The default SVID's SPIFFE ID if it verifies on the machine's clock, else why not."""
    try:
        chain_id, _ = verify_x509_svid(context.default_svid.chain, context.bundles)
    except X509SvidError as err:
        return err
    return str(chain_id)
