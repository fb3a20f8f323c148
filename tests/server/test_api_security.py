"""The server's promises to agents and against them, over real TLS to a real server.

Agents are played by :class:`pyspire.agent.client.ServerClient` with keys made here, so each
test can present exactly the evidence, CSR or certificate it wants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerClient, ServerUnavailable
from pyspire.crypto import LocalSigner, build_csr
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import TrustDomain
from pyspire.spiffe.x509svid import leaf_spiffe_id

from tests.support.daemons import ServerDaemon, start_server

TD = TrustDomain.parse("example.org")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    # Attestation rate limiting is on by default (1/s per address); these tests attest many
    # agents from 127.0.0.1, so they turn it off. The limiter has its own test below.
    daemon = start_server(tmp_path_factory.mktemp("server"), extra="ratelimit {\n attestation = false\n }")
    yield daemon
    daemon.stop()


_ROOTS: dict[int, list[x509.Certificate]] = {}


def roots(server: ServerDaemon) -> list[x509.Certificate]:
    """The server's bundle (read once per server: the CLI is slow next to a TLS handshake)."""
    if server.port not in _ROOTS:
        _ROOTS[server.port] = x509.load_pem_x509_certificates(server.bundle_pem().encode())
    return _ROOTS[server.port]


def new_client(server: ServerDaemon) -> ServerClient:
    client = ServerClient([("127.0.0.1", server.port)], TD)
    client.set_roots(roots(server))
    return client


async def no_challenge(_challenge: bytes) -> bytes:
    raise AssertionError("join tokens have no challenge")


def attested_agent_id(server: ServerDaemon, attestation_type: str, payload: bytes) -> str:
    """One AttestAgent call without a challenge, with a fresh CSR: the agent ID the server issued.

    Raises the server's GRPCError when it refuses, so a test can check its status and reason.
    """

    async def run() -> str:
        client = new_client(server)
        try:
            csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
            chain, _ = await client.attest(attestation_type, payload, csr, no_challenge)
        finally:
            client.close()
        return str(leaf_spiffe_id(chain[0]))

    return asyncio.run(run())


async def attest(server: ServerDaemon, token: str) -> tuple[ServerClient, list[x509.Certificate]]:
    """A client presenting a freshly attested agent SVID."""
    key = ec.generate_private_key(ec.SECP256R1())
    client = new_client(server)
    chain_tuple, _ = await client.attest("join_token", token.encode(), build_csr(LocalSigner(key)), no_challenge)
    chain = list(chain_tuple)
    client.set_identity(chain, key)
    return client, chain


def test_join_token_is_single_use_under_20_concurrent_attempts(server: ServerDaemon) -> None:
    token = server.join_token()

    async def race() -> list[BaseException | tuple[ServerClient, list[x509.Certificate]]]:
        return await asyncio.gather(*(attest(server, token) for _ in range(20)), return_exceptions=True)

    outcomes = asyncio.run(race())
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, GRPCError) and e.status is Status.INVALID_ARGUMENT for e in losers)
    assert all("join token does not exist or has already been used" in (e.message or "") for e in losers)  # type: ignore[union-attr]
    agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
    assert str(leaf_spiffe_id(winners[0][1][0])) == agent_id  # type: ignore[index]
    assert server.cli("agent", "list").stdout.count(agent_id) == 1


def test_expired_token_is_refused_and_consumed(server: ServerDaemon) -> None:
    token = server.cli("token", "generate", "-ttl", "1").stdout.split("Token: ", 1)[1].split()[0]
    time.sleep(1.5)
    with pytest.raises(GRPCError, match="join token expired"):
        asyncio.run(attest(server, token))
    with pytest.raises(GRPCError, match="does not exist or has already been used"):
        asyncio.run(attest(server, token))


@pytest.mark.parametrize(
    ("attestation_type", "payload", "csr", "status", "message"),
    [
        ("join_token", b"", True, Status.INVALID_ARGUMENT, "missing attestation data payload"),
        ("", b"x", True, Status.INVALID_ARGUMENT, "missing attestation data type"),
        (
            "no_such_attestor",
            b"x",
            True,
            Status.FAILED_PRECONDITION,
            'could not find node attestor type "no_such_attestor"',
        ),
        ("join_token", b"x", False, Status.INVALID_ARGUMENT, "missing CSR"),
        ("join_token", b"x" * (1024 * 1024 + 1), True, Status.INVALID_ARGUMENT, "at most"),
    ],
    ids=["empty-payload", "no-type", "unknown-type", "no-csr", "oversized-payload"],
)
def test_malformed_attestation_is_refused_before_any_plugin(
    server: ServerDaemon, attestation_type: str, payload: bytes, csr: bool, status: Status, message: str
) -> None:
    request_csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))) if csr else b""

    async def run() -> None:
        client = new_client(server)
        try:
            await client.attest(attestation_type, payload, request_csr, no_challenge)
        finally:
            client.close()

    with pytest.raises(GRPCError) as raised:
        asyncio.run(run())
    assert raised.value.status is status
    assert message in (raised.value.message or "")


def test_garbage_csr_is_invalid_argument(server: ServerDaemon) -> None:
    async def run() -> None:
        client = new_client(server)
        try:
            await client.attest("join_token", server.join_token().encode(), b"\x30\x03garbage", no_challenge)
        finally:
            client.close()

    with pytest.raises(GRPCError) as raised:
        asyncio.run(run())
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert "invalid CSR" in (raised.value.message or "")


def test_agent_gets_only_its_own_entries_and_cannot_steal_svids(server: ServerDaemon) -> None:
    alias_a, alias_b = "spiffe://example.org/node/a", "spiffe://example.org/node/b"
    token_a, token_b = server.join_token(alias_a), server.join_token(alias_b)

    def create(parent: str, spiffe_id: str) -> str:
        out = server.cli(
            "entry", "create", "-parentID", parent, "-spiffeID", spiffe_id, "-selector", "unix:uid:1"
        ).stdout
        return out.split("Entry ID         : ", 1)[1].split()[0]

    entry_a = create(alias_a, "spiffe://example.org/a-workload")
    entry_b = create(alias_b, "spiffe://example.org/b-workload")

    async def run() -> None:
        client_a, _ = await attest(server, token_a)
        client_b, _ = await attest(server, token_b)
        try:
            seen_a = {e.id for e in await client_a.sync_entries({})}
            seen_b = {e.id for e in await client_b.sync_entries({})}
            assert entry_a in seen_a
            assert entry_b not in seen_a
            assert entry_b in seen_b
            assert entry_a not in seen_b

            key = ec.generate_private_key(ec.SECP256R1())
            stolen = await client_a.new_x509_svids([(entry_b, build_csr(LocalSigner(key)))])
            assert stolen[0][1] is None
            assert "not found" in stolen[0][2].lower() or "not authorized" in stolen[0][2].lower()

            # A CSR asking for the server's ID and its own subject gets the entry's ID only.
            hostile = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
                .add_extension(
                    x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/spire/server")]),
                    critical=False,
                )
                .sign(key, hashes.SHA256())
                .public_bytes(serialization.Encoding.DER)
            )
            issued = await client_a.new_x509_svids([(entry_a, hostile)])
            assert issued[0][1] is not None
            leaf = issued[0][1][0]
            assert str(leaf_spiffe_id(leaf)) == "spiffe://example.org/a-workload"
            assert "evil" not in leaf.subject.rfc4514_string()
        finally:
            client_a.close()
            client_b.close()

    asyncio.run(run())


def test_agents_and_anonymous_callers_cannot_administer(server: ServerDaemon) -> None:
    entry = types_pb2.Entry(
        spiffe_id=types_pb2.SPIFFEID(trust_domain="example.org", path="/escalated"),
        parent_id=types_pb2.SPIFFEID(trust_domain="example.org", path="/spire/server"),
        selectors=[types_pb2.Selector(type="unix", value="uid:0")],
    )

    async def run() -> list[Status]:
        statuses = []
        agent, _ = await attest(server, server.join_token())
        anonymous = new_client(server)
        try:
            for client in (agent, anonymous):
                stub = entry_grpc.EntryStub(client._current())
                try:
                    await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=[entry]), timeout=10)
                except GRPCError as err:
                    statuses.append(err.status)
        finally:
            agent.close()
            anonymous.close()
        return statuses

    assert asyncio.run(run()) == [Status.PERMISSION_DENIED, Status.PERMISSION_DENIED]
    assert "/escalated" not in server.cli("entry", "show").stdout


def test_renewed_agent_cannot_keep_using_its_previous_svid(server: ServerDaemon) -> None:
    async def run() -> GRPCError:
        client, old_chain = await attest(server, server.join_token())
        old_key = client._key
        new_key = ec.generate_private_key(ec.SECP256R1())
        renewed = await client.renew(build_csr(LocalSigner(new_key)))
        new_chain = list(renewed)
        client.set_identity(new_chain, new_key)
        await client.sync_entries({})  # first use of the new SVID promotes it
        client.set_identity(old_chain, old_key)
        try:
            await client.sync_entries({})
        except GRPCError as err:
            return err
        finally:
            client.close()
        raise AssertionError("the replaced SVID was still accepted")

    error = asyncio.run(run())
    assert error.status is Status.PERMISSION_DENIED
    assert "expected to have serial number" in (error.message or "")


def test_attestation_is_rate_limited_per_address(tmp_path: Path) -> None:
    limited = start_server(tmp_path / "limited")
    try:
        tokens = [limited.join_token() for _ in range(5)]
        roots(limited)

        async def burst() -> list[BaseException | tuple[ServerClient, list[x509.Certificate]]]:
            return await asyncio.gather(*(attest(limited, t) for t in tokens), return_exceptions=True)

        outcomes = asyncio.run(burst())
        # RESOURCE_EXHAUSTED reaches the agent as "retry later".
        refused = [o for o in outcomes if isinstance(o, ServerUnavailable) and "rate limit exceeded" in str(o)]
        assert refused
        assert len(refused) < 5
    finally:
        limited.stop()


def test_large_batches_keep_per_csr_outcomes_in_order(server: ServerDaemon) -> None:
    # 20 CSRs: above the size at which half are checked in the worker process.
    alias = "spiffe://example.org/node/batch"
    token = server.join_token(alias)
    out = server.cli(
        "entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/batched", "-selector", "unix:uid:7"
    ).stdout
    entry_id = out.split("Entry ID         : ", 1)[1].split()[0]

    async def run() -> list[tuple[str, object, str]]:
        client, _ = await attest(server, token)
        try:
            csrs = [build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))) for _ in range(20)]
            csrs[3] = b"\x30\x03bad"
            csrs[15] = csrs[14][:-8] + b"\x00" * 8  # a signature that no longer verifies
            return await client.new_x509_svids([(entry_id, csr) for csr in csrs])
        finally:
            client.close()

    results = asyncio.run(run())
    refused = [i for i, (_, svid, _) in enumerate(results) if svid is None]
    assert refused == [3, 15]
    assert all("malformed CSR" in results[i][2] for i in refused)
    leaf = results[0][1][0]  # type: ignore[index]
    assert str(leaf_spiffe_id(leaf)) == "spiffe://example.org/batched"
