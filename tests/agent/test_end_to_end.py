"""A real server and real agents: attestation, the Workload API, rotation of trust, refusals.

Workloads are this test process and children it starts; they reach the agent through its
Unix socket with three independent clients: pyspire's own, py-spiffe, and the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub
from pyspire.spiffe import Bundle, SpiffeId, TrustDomain, X509Context, X509Source, X509Svid, verify_x509_svid
from pyspire.spiffe.workloadapi import HEADER, WorkloadApiClient, WorkloadApiError
from pyspire.spiffe.x509svid import leaf_spiffe_id
from pyspire.transport import unix_socket_in_use

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_agent, start_server
from tests.support.identities import CLIENT, SERVER, pick
from tests.support.mtls_rotation import start_pair
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

T = TypeVar("T")
UID = os.getuid()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


def _node(server: ServerDaemon, directory: Path, **kwargs: object) -> tuple[AgentDaemon, str]:
    """An agent attested with a fresh join token whose alias is ``spiffe://example.org/node/<uuid>``."""
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = start_agent(directory, server, server.join_token(alias), **kwargs)
    return agent, alias


def _entry(server: ServerDaemon, parent: str, spiffe_id: str, *selectors: str, extra: tuple[str, ...] = ()) -> str:
    args = ["entry", "create", "-parentID", parent, "-spiffeID", spiffe_id, *extra]
    for selector in selectors:
        args += ["-selector", selector]
    out = server.cli(*args).stdout
    return out.split("Entry ID         : ", 1)[1].split()[0]


@pytest.fixture
def node(server: ServerDaemon, tmp_path: Path) -> Iterator[tuple[AgentDaemon, str]]:
    agent, alias = _node(server, tmp_path / "agent")
    yield agent, alias
    agent.stop()


def test_workload_gets_a_verifiable_svid_through_three_clients(
    server: ServerDaemon, node: tuple[AgentDaemon, str], tmp_path: Path
) -> None:
    agent, alias = node
    _entry(server, alias, "spiffe://example.org/web", f"unix:uid:{UID}")

    context = eventually(lambda: x509_context(agent))
    svid = context.default_svid
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
    verified_id, _ = verify_x509_svid(svid.chain, context.bundles)
    assert str(verified_id) == "spiffe://example.org/web"

    # The CLI, and openssl on what it wrote.
    agent.cli("api", "fetch", "x509", "-write", str(tmp_path / "out"))
    if shutil.which("openssl"):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(tmp_path / "out" / "bundle.0.pem"),
                str(tmp_path / "out" / "svid.0.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "out" / "svid.0.key").stat().st_mode) == 0o600

    # py-spiffe, an independent implementation of the client side.
    from spiffe import WorkloadApiClient as PySpiffeClient  # noqa: PLC0415

    with PySpiffeClient(agent.address) as client:
        spiffe_context = client.fetch_x509_context()
        assert str(spiffe_context.default_svid.spiffe_id) == "spiffe://example.org/web"
        jwt_svid = client.fetch_jwt_svid(audience={"billing"})
        assert str(jwt_svid.spiffe_id) == "spiffe://example.org/web"
        jwt_bundles = client.fetch_jwt_bundles()
        assert jwt_bundles.get_bundle_for_trust_domain(jwt_svid.spiffe_id.trust_domain) is not None
        validated = client.validate_jwt_svid(jwt_svid.token, "billing")
        assert str(validated.spiffe_id) == "spiffe://example.org/web"

    # A cached JWT-SVID is returned again for the same audience.
    first = agent.cli("api", "fetch", "jwt", "-audience", "db", "-output", "json").stdout
    second = agent.cli("api", "fetch", "jwt", "-audience", "db", "-output", "json").stdout
    token = json.loads(first)[0]["svids"][0]["svid"]
    assert json.loads(second)[0]["svids"][0]["svid"] == token
    wrong = agent.cli("api", "validate", "jwt", "-audience", "other", "-svid", token, check=False)
    assert wrong.returncode == 1
    assert "SVID is not valid: " in wrong.stderr


def test_socket_permissions_and_clean_shutdown(server: ServerDaemon, tmp_path: Path) -> None:
    agent, alias = _node(server, tmp_path / "agent")
    _entry(server, alias, "spiffe://example.org/stream", f"unix:uid:{UID}")
    assert stat.S_IMODE(agent.socket_path.stat().st_mode) == 0o777
    data_dir = tmp_path / "agent" / "data"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "agent-data.json").stat().st_mode) == 0o600
    eventually(lambda: x509_context(agent))

    async def watch_until_shutdown() -> GRPCError:
        channel = Channel(path=str(agent.socket_path))
        stub = SpiffeWorkloadAPIStub(channel)
        try:
            async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
                await stream.send_message(pb.X509SVIDRequest(), end=True)
                first = await stream.recv_message()
                assert first is not None
                assert first.svids
                assert agent.process is not None
                agent.process.send_signal(signal.SIGTERM)
                while await stream.recv_message() is not None:
                    pass
        except GRPCError as err:
            return err
        finally:
            channel.close()
        raise AssertionError("the stream ended with OK")

    error = asyncio.run(watch_until_shutdown())
    assert error.status is Status.UNAVAILABLE
    assert agent.stop() == 0
    assert not agent.socket_path.exists()
    assert "Agent stopped" in agent.log()


def test_no_matching_entry_is_permission_denied(server: ServerDaemon, node: tuple[AgentDaemon, str]) -> None:
    agent, alias = node
    _entry(server, alias, "spiffe://example.org/someone-else", "unix:uid:4242424")
    with pytest.raises(WorkloadApiError, match="PERMISSION_DENIED: no identity issued"):
        x509_context(agent)
    result = agent.cli("api", "fetch", "jwt", "-audience", "x", check=False)
    assert result.returncode == 1
    assert "no identity issued" in result.stderr
    # Both the caller and the agent's log say what the caller was attested as.
    assert f"unix:uid:{UID}" in result.stderr
    fetched = agent.cli("api", "fetch", "x509", check=False)
    assert "no registration entry matches the caller's selectors" in fetched.stderr
    assert f"unix:uid:{UID}" in fetched.stderr
    assert "No identity issued" in agent.log()


def test_missing_security_header_is_invalid_argument(node: tuple[AgentDaemon, str]) -> None:
    agent, _ = node

    async def call() -> None:
        channel = Channel(path=str(agent.socket_path))
        try:
            await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), timeout=10)
        finally:
            channel.close()

    with pytest.raises(GRPCError) as raised:
        asyncio.run(call())
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert "security header" in (raised.value.message or "")


def test_stream_pushes_new_svids_and_drops_deleted_ones(server: ServerDaemon, node: tuple[AgentDaemon, str]) -> None:
    agent, alias = node
    first_id = _entry(server, alias, "spiffe://example.org/one", f"unix:uid:{UID}")

    async def watch() -> list[list[str]]:
        seen: list[list[str]] = []
        async with WorkloadApiClient(agent.address) as client:
            stream = client.watch_x509_contexts()
            context = await asyncio.wait_for(anext(stream), 20)
            seen.append([str(s.spiffe_id) for s in context.svids])
            await asyncio.sleep(1.1)  # a later created_at second than "one"
            await asyncio.to_thread(_entry, server, alias, "spiffe://example.org/two", f"unix:uid:{UID}")
            context = await asyncio.wait_for(anext(stream), 20)
            seen.append([str(s.spiffe_id) for s in context.svids])
            await asyncio.to_thread(server.cli, "entry", "delete", "-entryID", first_id)
            context = await asyncio.wait_for(anext(stream), 20)
            seen.append([str(s.spiffe_id) for s in context.svids])
            await stream.aclose()
        return seen

    eventually(lambda: x509_context(agent))
    seen = asyncio.run(watch())
    # SPIRE's order: the oldest entry first.
    assert seen == [
        ["spiffe://example.org/one"],
        ["spiffe://example.org/one", "spiffe://example.org/two"],
        ["spiffe://example.org/two"],
    ]


def test_hints_are_deduplicated_keeping_the_oldest(server: ServerDaemon, node: tuple[AgentDaemon, str]) -> None:
    agent, alias = node
    # created_at has a resolution of one second: space the entries so their order is known.
    _entry(server, alias, "spiffe://example.org/h1", f"unix:uid:{UID}", extra=("-hint", "external"))
    time.sleep(1.1)
    _entry(server, alias, "spiffe://example.org/h2", f"unix:gid:{os.getgid()}", extra=("-hint", "external"))
    time.sleep(1.1)
    _entry(server, alias, "spiffe://example.org/h3", f"unix:uid:{UID}")

    def three_entries_synced() -> list[str]:
        ids = [str(s.spiffe_id) for s in x509_context(agent).svids]
        assert "spiffe://example.org/h3" in ids
        return ids

    assert eventually(three_entries_synced) == ["spiffe://example.org/h1", "spiffe://example.org/h3"]


def test_a_repeated_stop_request_still_exits_cleanly(server: ServerDaemon, tmp_path: Path) -> None:
    # Regression (CI): SIGTERM sent again while the agent was finishing its shutdown killed it
    # by signal (-15) instead of letting it exit 0.
    agent, _ = _node(server, tmp_path / "agent")
    assert agent.stop_insistently() == 0
    assert "Agent stopped" in agent.log()


def test_restart_reuses_the_saved_svid_and_token_is_single_use(server: ServerDaemon, tmp_path: Path) -> None:
    token = server.join_token()
    agent = start_agent(tmp_path / "agent", server, token)
    agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
    assert agent.stop() == 0
    # Restart: the token is spent, but the saved SVID makes it unnecessary.
    agent.start()
    try:
        assert "Loaded the saved agent SVID" in agent.log()
        assert agent_id in server.cli("agent", "list").stdout
    finally:
        agent.stop()
    # Another agent cannot use the spent token.
    second = start_agent(tmp_path / "second", server, token, wait=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    assert "join token does not exist or has already been used" in second.log()
    assert "Traceback" not in second.log()  # a refusal is a clear error, not a crash


def _jwt_svid(agent: AgentDaemon, audience: str) -> str:
    async def fetch() -> str:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            return (await client.fetch_jwt_svids([audience]))[0].token

    return asyncio.run(fetch())


def _leaves(context: X509Context, count: int) -> dict[str, x509.Certificate]:
    """Each SVID's leaf by SPIFFE ID, once the context holds ``count`` of them."""
    leaves = {str(svid.spiffe_id): svid.leaf for svid in context.svids}
    assert len(leaves) == count, sorted(leaves)
    return leaves


def test_cached_svids_are_served_while_the_server_is_down(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    try:
        alias = "spiffe://example.org/node/outage"
        agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
        _entry(server, alias, "spiffe://example.org/survivor", f"unix:uid:{UID}")
        _entry(server, alias, SERVER, f"unix:uid:{UID}", extra=("-hint", "server"))
        _entry(server, alias, CLIENT, f"unix:uid:{UID}", extra=("-hint", "client"))
        before = eventually(lambda: _leaves(x509_context(agent), 3))
        cached_jwt = _jwt_svid(agent, "outage-audience")
        with (
            X509Source(agent.address, timeout=30, picker=pick("server")) as server_source,
            X509Source(agent.address, timeout=30, picker=pick("client")) as client_source,
        ):
            pair = start_pair(server_source, client_source)
            try:
                server.stop()
                time.sleep(2.5)  # a couple of failed syncs
                assert _leaves(x509_context(agent), 3) == before
                assert "Cannot reach the server" in agent.log()
                # Two workloads still talk mutual TLS on what the agent cached (reliability case 20).
                seen = pair.exchange()
                assert str(leaf_spiffe_id(seen.server_leaf)) == SERVER
            finally:
                pair.server.close()
        # Reliability case 20: a JWT-SVID still valid is served from the cache, without waiting on the server.
        started = time.monotonic()
        assert _jwt_svid(agent, "outage-audience") == cached_jwt
        assert time.monotonic() - started < 2.0
        server.start()
        # The agent reconnects by itself: an entry created after the outage reaches the workload.
        _entry(server, alias, "spiffe://example.org/after-outage", f"unix:uid:{UID}")
        eventually(
            lambda: "spiffe://example.org/after-outage" in [str(s.spiffe_id) for s in x509_context(agent).svids],
            timeout=60,
        )
        assert agent.stop() == 0
    finally:
        server.stop()


def test_banned_agent_deletes_its_svid_and_stops(server: ServerDaemon, tmp_path: Path) -> None:
    token = server.join_token()
    agent = start_agent(tmp_path / "agent", server, token)
    server.cli("agent", "ban", "-spiffeID", f"spiffe://example.org/spire/agent/join_token/{token}")
    assert agent.process is not None
    assert agent.process.wait(30) == 1
    assert "banned" in agent.log()
    # As SPIRE's agent: the SVID is gone, the server's bundle stays (a restart trusts the server it knew).
    saved = json.loads((tmp_path / "agent" / "data" / "agent-data.json").read_text())
    assert saved["svid"] is None
    roots = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in saved["bundle"]]
    assert roots == list(
        Bundle.parse_x509(TrustDomain.parse("example.org"), server.bundle_pem().encode()).x509_authorities
    )


def test_an_agent_banned_while_stopped_is_refused_when_it_starts_with_its_saved_svid(
    server: ServerDaemon, tmp_path: Path
) -> None:
    """Reliability case 16, a restart after the ban: the agent still holds the SVID it saved, so it
    skips attestation and is refused at its first sync (SPIRE: "failed to fetch authorized
    entries"). It exits, clears the SVID, and never opens its Workload API."""
    token = server.join_token()
    agent = start_agent(tmp_path / "agent", server, token)
    assert agent.stop() == 0
    assert json.loads((tmp_path / "agent" / "data" / "agent-data.json").read_text())["svid"]
    server.cli("agent", "ban", "-spiffeID", f"spiffe://example.org/spire/agent/join_token/{token}")
    mark = len(agent.log())
    agent.start(wait=False)
    assert agent.process is not None
    assert agent.process.wait(30) == 1
    log = agent.log()[mark:]
    assert "Loaded the saved agent SVID" in log, log
    assert "is banned" in log, log
    assert "Node attestation was successful" not in log
    assert "Agent started" not in log
    assert not unix_socket_in_use(agent.socket_path)
    assert json.loads((tmp_path / "agent" / "data" / "agent-data.json").read_text())["svid"] is None


def test_evicted_join_token_agent_stops_with_a_clear_message(server: ServerDaemon, tmp_path: Path) -> None:
    token = server.join_token()
    agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
    agent = start_agent(tmp_path / "agent", server, token)
    assert agent_id in server.cli("agent", "list").stdout
    server.cli("agent", "evict", "-spiffeID", agent_id)
    assert agent.process is not None
    assert agent.process.wait(30) == 1
    assert "cannot re-attest" in agent.log()
    assert agent_id not in server.cli("agent", "list").stdout

    # The token was spent by the first attestation: evicting the node does not make it good again.
    again = start_agent(tmp_path / "again", server, token, wait=False)
    assert again.process is not None
    assert again.process.wait(30) != 0
    assert "join token does not exist or has already been used" in again.log()
    assert agent_id not in server.cli("agent", "list").stdout


def test_failing_workload_attestor_is_unavailable_never_fewer_selectors(server: ServerDaemon, tmp_path: Path) -> None:
    # A 1-byte limit makes every hash fail: the call must fail, not fall back to uid alone.
    agent, alias = _node(server, tmp_path / "agent", unix_data="discover_workload_path = true\nworkload_size_limit = 1")
    try:
        _entry(server, alias, "spiffe://example.org/uid-only", f"unix:uid:{UID}")
        with pytest.raises(WorkloadApiError, match=r"UNAVAILABLE: .*exceeds size limit"):
            x509_context(agent)
    finally:
        agent.stop()


def test_path_and_sha256_selectors_select_the_binary(server: ServerDaemon, tmp_path: Path) -> None:
    agent, alias = _node(server, tmp_path / "agent", unix_data="discover_workload_path = true")
    try:
        import hashlib  # noqa: PLC0415

        executable = os.path.realpath(sys.executable)
        with open(executable, "rb") as binary:
            digest = hashlib.sha256(binary.read()).hexdigest()
        _entry(server, alias, "spiffe://example.org/python", f"unix:path:{executable}", f"unix:sha256:{digest}")
        _entry(server, alias, "spiffe://example.org/other-binary", "unix:path:/usr/bin/false")
        context = eventually(lambda: x509_context(agent))
        assert [str(s.spiffe_id) for s in context.svids] == ["spiffe://example.org/python"]
    finally:
        agent.stop()


def test_agent_refuses_a_server_with_another_identity(server: ServerDaemon, tmp_path: Path) -> None:
    other = start_server(tmp_path / "other")
    try:
        # Bootstrap with the other server's bundle: the real server's chain does not verify.
        agent = start_agent(tmp_path / "agent", other, server.join_token(), wait=False)
        agent.config_text = agent.config_text.replace(f'server_port = "{other.port}"', f'server_port = "{server.port}"')
        agent.stop()
        agent.start(wait=False)
        eventually(lambda: "The server cannot be trusted; retrying" in agent.log(), timeout=30)
        assert agent.process is not None
        assert agent.process.poll() is None  # retrying, not attested
        assert "does not chain to the agent's trust bundle" in agent.log()
        assert not agent.socket_path.exists()
        agent.stop()
    finally:
        other.stop()


def test_agent_ids_follow_spire(server: ServerDaemon, node: tuple[AgentDaemon, str]) -> None:
    agents = json.loads(server.cli("agent", "list", "-output", "json").stdout)["agents"]
    ids = {SpiffeId.from_path(TrustDomain.parse(a["id"]["trust_domain"]), a["id"]["path"]) for a in agents}
    assert all(str(i).startswith("spiffe://example.org/spire/agent/join_token/") for i in ids)


def test_agent_svid_is_renewed_at_half_life_and_workloads_keep_rotating(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", extra='agent_ttl = "20s"\n    default_x509_svid_ttl = "20s"')
    try:
        alias = "spiffe://example.org/node/renewing"
        agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
        _entry(server, alias, "spiffe://example.org/short-lived", f"unix:uid:{UID}")
        first = eventually(lambda: x509_context(agent)).default_svid
        # Past half of the 20 s lifetimes (30 s with the 10 s backdate, so about 5 s after
        # issuance, with jitter): the agent SVID renewed through RenewAgent, the workload SVID
        # re-issued, and both keep working.
        renewed_by = time.monotonic() + 9  # renewal is due about 5 s after issuance: both within 9 s
        eventually(lambda: "Agent SVID renewed" in agent.log(), timeout=9)

        def reissued() -> X509Svid | None:
            svid = x509_context(agent).default_svid
            return svid if svid.leaf.serial_number != first.leaf.serial_number else None

        second = eventually(reissued, timeout=max(0.5, renewed_by - time.monotonic()))
        assert second.leaf.serial_number != first.leaf.serial_number
        assert agent.process is not None
        assert agent.process.poll() is None
        assert agent.stop() == 0
    finally:
        server.stop()


def test_the_workload_api_opens_after_the_first_sync(server: ServerDaemon, tmp_path: Path) -> None:
    # As SPIRE's agent: a workload calling the moment the socket appears gets its SVID, not a
    # refusal for an identity the agent has not fetched yet.
    alias = f"spiffe://example.org/node/first-sync-{uuid.uuid4().hex[:8]}"
    _entry(server, alias, "spiffe://example.org/first-caller", f"unix:uid:{UID}")
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
    try:
        context = x509_context(agent)
        assert str(context.default_svid.spiffe_id) == "spiffe://example.org/first-caller"
        log = agent.log()
        assert log.index("Creating X509-SVID") < log.index("Starting Workload and SDS APIs")
    finally:
        agent.stop()


@pytest.mark.parametrize("socket", ["socket_path", "admin_socket_path"])
def test_a_socket_the_agent_cannot_bind_ends_it_with_the_reason(
    server: ServerDaemon, tmp_path: Path, socket: str
) -> None:
    """Regression: stop() closed the gRPC server that had failed to start, and the agent ended
    with "unexpected RuntimeError: Server is not started (a bug in pyspire)"."""
    long_path = tmp_path / ("d" * 60) / ("e" * 60) / "api.sock"
    extra = f'admin_socket_path = "{long_path}"' if socket == "admin_socket_path" else ""
    text, socket_path = agent_config(tmp_path / "agent", server, extra=extra)
    if socket == "socket_path":
        text = text.replace(f'socket_path = "{socket_path}"', f'socket_path = "{long_path}"')
    agent = AgentDaemon(
        "pyspire-agent", tmp_path / "agent", socket_path, text, ["-joinToken", server.join_token()]
    ).start(wait=False)
    assert agent.process is not None
    assert agent.process.wait(30) == 1
    assert f"cannot listen on {long_path}: AF_UNIX path too long" in agent.log()
    assert "a bug in pyspire" not in agent.log()
    assert "Traceback" not in agent.log()
