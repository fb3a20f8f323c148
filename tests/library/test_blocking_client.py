"""BlockingWorkloadApiClient: the Workload API's one-off calls for synchronous code, against a real pyspire-agent."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pyspire.spiffe import BlockingWorkloadApiClient, JwtSvid, SpiffeId, TrustDomain, WorkloadApiError

from tests.support.daemons import start_agent
from tests.support.identities import CLIENT, INTRUDER, SERVER, Deployment

EXAMPLE = TrustDomain.parse("example.org")


def test_x509_context_and_bundles(deployment: Deployment) -> None:
    threads = threading.active_count()
    with BlockingWorkloadApiClient(deployment.agent.address) as client:
        context = client.fetch_x509_context()
        assert [str(svid.spiffe_id) for svid in context.svids][:3] == [SERVER, CLIENT, INTRUDER]
        assert context.default_svid.private_key is not None
        bundles = client.fetch_x509_bundles()
        assert bundles.trust_domains() == [EXAMPLE]
        bundle, held = bundles.get(EXAMPLE), context.bundles.get(EXAMPLE)
        assert bundle is not None
        assert held is not None
        assert bundle.x509_authorities == held.x509_authorities
        assert context.default_svid.chain[-1].issuer in {a.subject for a in bundle.x509_authorities}
    assert threading.active_count() == threads  # close() ended the client's thread


def test_jwt_svids_fetched_validated_by_the_agent_and_locally(deployment: Deployment) -> None:
    with BlockingWorkloadApiClient(deployment.agent.address) as client:
        svids = client.fetch_jwt_svids(["billing", "audit"])
        assert [str(s.spiffe_id) for s in svids][:3] == [SERVER, CLIENT, INTRUDER]
        assert set(svids[0].audience) == {"billing", "audit"}
        (mine,) = client.fetch_jwt_svids(["billing"], spiffe_id=CLIENT)
        assert str(mine.spiffe_id) == CLIENT

        spiffe_id, claims = client.validate_jwt_svid(mine.token, "billing")
        assert spiffe_id == SpiffeId.parse(CLIENT)
        assert claims["sub"] == CLIENT
        assert isinstance(claims["exp"], int)
        with pytest.raises(WorkloadApiError) as refused:
            client.validate_jwt_svid(mine.token, "payroll")
        assert refused.value.status == "INVALID_ARGUMENT"

        local = JwtSvid.parse_and_validate(mine.token, client.fetch_jwt_bundles(), ["billing"])
        assert local.spiffe_id == spiffe_id


def test_bad_arguments_are_refused_before_any_call(deployment: Deployment) -> None:
    with BlockingWorkloadApiClient(deployment.agent.address) as client:
        with pytest.raises(TypeError, match="a list of audiences, not one string"):
            client.fetch_jwt_svids("billing")
        with pytest.raises(ValueError, match="a JWT-SVID needs an audience"):
            client.fetch_jwt_svids([])
        with pytest.raises(ValueError, match="a JWT-SVID needs an audience"):
            client.fetch_jwt_svids(["billing", ""])
        with pytest.raises(ValueError, match="SPIFFE ID"):
            client.fetch_jwt_svids(["billing"], spiffe_id="not an id")
    with pytest.raises(ValueError, match="timeout must be positive"):
        BlockingWorkloadApiClient(deployment.agent.address, timeout=0)


def test_no_agent_at_the_address_is_unavailable_at_once(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/absent.sock"
    with BlockingWorkloadApiClient(address, timeout=20) as client:
        started = time.monotonic()
        with pytest.raises(WorkloadApiError) as raised:
            client.fetch_x509_context()
        assert time.monotonic() - started < 5
    assert raised.value.status == "UNAVAILABLE"
    assert str(raised.value).startswith(f"FetchX509SVID: cannot reach the Workload API at {address}: ")
    assert "No such file or directory" in str(raised.value)


def test_a_workload_without_identity_gets_the_agents_refusal(deployment: Deployment, tmp_path: Path) -> None:
    alias = "spiffe://example.org/node/bare-blocking"
    bare = start_agent(tmp_path / "bare", deployment.server, deployment.server.join_token(alias))
    try:
        with BlockingWorkloadApiClient(bare.address) as client:
            with pytest.raises(WorkloadApiError, match="no identity issued") as raised:
                client.fetch_x509_context()
            assert raised.value.status == "PERMISSION_DENIED"
            with pytest.raises(WorkloadApiError) as jwt_raised:
                client.fetch_jwt_svids(["billing"])
            assert jwt_raised.value.status == "PERMISSION_DENIED"
    finally:
        bare.stop()


def test_a_silent_agent_is_a_deadline_naming_the_call(tmp_path: Path) -> None:
    # A socket that accepts and never answers: the call ends at the client's timeout.
    path = tmp_path / "silent.sock"
    ready = threading.Event()
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    async def serve(stop: asyncio.Event) -> None:
        server = await asyncio.start_unix_server(accept, path=str(path))
        ready.set()
        async with server:
            await stop.wait()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(stop),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        with BlockingWorkloadApiClient(f"unix://{path}", timeout=1) as client:
            started = time.monotonic()
            with pytest.raises(WorkloadApiError) as raised:
                client.fetch_x509_bundles()
            assert 0.9 < time.monotonic() - started < 5
        assert raised.value.status == "DEADLINE_EXCEEDED"
        assert str(raised.value) == f"FetchX509Bundles: no answer from the Workload API at unix://{path} within 1 s"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)


def test_a_closed_client_refuses_calls_by_name(deployment: Deployment) -> None:
    client = BlockingWorkloadApiClient(deployment.agent.address)
    client.close()
    client.close()  # idempotent
    with pytest.raises(WorkloadApiError, match=r"the Workload API client for unix://.* is closed"):
        client.fetch_x509_context()


def test_the_address_comes_from_the_environment(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", deployment.agent.address)
    with BlockingWorkloadApiClient() as client:
        assert str(client.fetch_x509_context().default_svid.spiffe_id) == SERVER
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET")
    with pytest.raises(WorkloadApiError, match="no Workload API address: pass one or set SPIFFE_ENDPOINT_SOCKET"):
        BlockingWorkloadApiClient()
