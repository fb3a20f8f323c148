"""TLS session resumption never lets a caller skip verification against the current bundle (reliability case 19).

A resumed session skips certificate verification: the server reuses what it verified in the
first handshake. So after the CA that signed an agent's SVID is revoked, a client resuming
its earlier session would still be taken for that agent (SPIRE v1.14.3, #6715). The server
issues no session tickets (TLS 1.2 or 1.3), and a session resumed anyway (OpenSSL's TLS 1.2
session-ID cache, which Python cannot turn off) carries no identity.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.spiffe.x509svid import leaf_spiffe_id
from pyspire.transport import client_tls_context

from tests.server.test_api_security import new_client, no_challenge, roots
from tests.support.daemons import ServerDaemon, start_server
from tests.support.waiting import eventually


class ResumingClient:
    """A TLS client that offers the session of its previous connection, and says what became of it."""

    def __init__(
        self,
        trusted: list[x509.Certificate],
        chain: list[x509.Certificate] = (),  # type: ignore[assignment]
        key: PrivateKeyTypes | None = None,
        *,
        version: ssl.TLSVersion,
    ) -> None:
        self.context = client_tls_context(trusted, chain, key)
        self.context.maximum_version = version
        self.session: ssl.SSLSession | None = None
        self.last: ssl.SSLObject | None = None
        create = self.context.wrap_bio

        def wrap_bio(
            incoming: Any, outgoing: Any, server_side: bool = False, server_hostname: Any = None, session: Any = None
        ) -> ssl.SSLObject:
            self.last = create(incoming, outgoing, server_side, server_hostname, session=self.session)
            return self.last

        self.context.wrap_bio = wrap_bio  # type: ignore[method-assign]

    async def call(self, port: int, stub: type, method: str, request: Any) -> Any:
        """One RPC on a new connection (offering the saved session); the session is saved for the next."""
        channel = Channel("127.0.0.1", port, ssl=self.context)
        try:
            reply = await getattr(stub(channel), method)(request, timeout=10)
            assert self.last is not None
            self.session = self.last.session
            return reply
        finally:
            channel.close()


async def _attested_svid(server: ServerDaemon) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """An agent SVID (and its key) attested with a join token."""
    key = ec.generate_private_key(ec.SECP256R1())
    client = new_client(server)
    try:
        chain, _ = await client.attest(
            "join_token", server.join_token().encode(), build_csr(LocalSigner(key)), no_challenge
        )
    finally:
        client.close()
    return list(chain), key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"), extra="ratelimit {\n attestation = false\n }")
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_the_server_issues_no_session_tickets(server: ServerDaemon, version: ssl.TLSVersion) -> None:
    """OP_NO_TICKET alone leaves TLS 1.3's stateful tickets on: num_tickets = 0 stops them."""
    client = ResumingClient(roots(server), version=version)

    get_bundle = bundle_pb2.GetBundleRequest()
    asyncio.run(client.call(server.port, bundle_grpc.BundleStub, "GetBundle", get_bundle))
    assert client.session is not None
    assert not client.session.has_ticket
    if version is ssl.TLSVersion.TLSv1_3:  # without a ticket there is nothing to resume
        asyncio.run(client.call(server.port, bundle_grpc.BundleStub, "GetBundle", get_bundle))
        assert client.last is not None
        assert not client.last.session_reused


def test_an_agent_resuming_its_session_after_its_ca_is_revoked_is_refused(tmp_path: Path) -> None:
    """The agent's SVID is signed by a CA that is then rotated out and revoked; its earlier TLS
    1.2 session (resumable by session ID) must not carry it past the current bundle."""
    server = start_server(tmp_path / "server", extra="ratelimit {\n attestation = false\n }")
    runner = asyncio.Runner()
    try:
        chain, key = runner.run(_attested_svid(server))
        client = ResumingClient(roots(server), chain, key, version=ssl.TLSVersion.TLSv1_2)
        sync = entry_pb2.GetAuthorizedEntriesRequest()
        runner.run(client.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))

        old_id = server.x509_authority_id()
        new_id = server.x509_authority_id("prepare", "Prepared")
        server.cli("localauthority", "x509", "activate", "-authorityID", new_id)
        server.cli("localauthority", "x509", "taint", "-authorityID", old_id)
        server.cli("localauthority", "x509", "revoke", "-authorityID", old_id)
        eventually(lambda: old_id.lower() not in server.cli("localauthority", "x509", "show").stdout.lower())

        # A full handshake with the SVID of the revoked CA fails...
        current_roots = x509.load_pem_x509_certificates(server.bundle_pem().encode())
        fresh = ResumingClient(current_roots, chain, key, version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises((ssl.SSLError, ConnectionError, GRPCError, OSError)):
            runner.run(fresh.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))

        # ...and resuming the session verified before the revocation gets nothing either.
        with pytest.raises(GRPCError) as raised:
            runner.run(client.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))
        assert client.last is not None
        assert client.last.session_reused  # OpenSSL did resume it: the server refused the identity
        assert raised.value.status is Status.UNAUTHENTICATED
        assert "resumed a TLS session" in (raised.value.message or "")
    finally:
        runner.close()
        server.stop()


def test_an_agent_resuming_its_session_after_a_ban_is_refused(server: ServerDaemon) -> None:
    runner = asyncio.Runner()
    try:
        chain, key = runner.run(_attested_svid(server))
        client = ResumingClient(roots(server), chain, key, version=ssl.TLSVersion.TLSv1_2)
        sync = entry_pb2.GetAuthorizedEntriesRequest()
        runner.run(client.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))
        server.cli("agent", "ban", "-spiffeID", str(leaf_spiffe_id(chain[0])))

        with pytest.raises(GRPCError) as resumed:
            runner.run(client.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))
        assert client.last is not None
        assert client.last.session_reused
        assert resumed.value.status is Status.UNAUTHENTICATED

        client.session = None
        with pytest.raises(GRPCError) as fresh:
            runner.run(client.call(server.port, entry_grpc.EntryStub, "GetAuthorizedEntries", sync))
        assert fresh.value.status is Status.PERMISSION_DENIED
        assert "is banned" in (fresh.value.message or "")
    finally:
        runner.close()
