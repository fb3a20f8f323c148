"""TLS with optional client certificates, SPIFFE server checks, rotation, peer credentials."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import wrappers_pb2
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from pyspire.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from pyspire.spiffe import SpiffeId, match_id
from pyspire.transport import (
    CallerNotPinned,
    GrpcServer,
    PeerLeaf,
    PinnedCaller,
    ServerIdentityError,
    ServerTlsContexts,
    SpiffeChannel,
    client_tls_context,
    peer_address,
    peer_credentials,
    peer_leaf,
    process_start_time,
)

from tests.support.free_port import free_port
from tests.support.pki import Issued, make_ca, make_leaf

SERVER_ID = "spiffe://example.org/spire/server"


class WhoAmI(debug_grpc.DebugBase):
    """Answers with what the transport module found out about the caller."""

    calls = 0

    async def GetInfo(self, stream: Any) -> None:
        WhoAmI.calls += 1
        await stream.recv_message()
        leaf = peer_leaf(stream)
        credentials = peer_credentials(stream)
        subject = str(leaf.spiffe_id) if leaf else "none"
        await stream.send_message(
            debug_pb2.GetInfoResponse(
                svid_chain=[debug_pb2.GetInfoResponse.Cert(subject=subject)],
                uptime=credentials.pid if credentials else 0,
                agents_count=credentials.uid if credentials else -1,
                entries_count=1 if peer_address(stream) else 0,
            )
        )


async def ask(channel: Channel) -> debug_pb2.GetInfoResponse:
    return await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest(), timeout=5)


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[ServerTlsContexts, int, Issued]]:
    ca = make_ca()
    server_svid = make_leaf(ca, SERVER_ID)
    contexts = ServerTlsContexts()
    contexts.update([server_svid.certificate], server_svid.key, [ca.certificate])
    # The server's own listener class: TLS is layered on by GrpcServer, not by asyncio.
    server = GrpcServer([WhoAmI()])
    port = free_port()
    await server.start_tcp("127.0.0.1", port, ssl=contexts.listener)
    yield contexts, port, ca
    server.close()
    await server.wait_closed()


async def test_client_certificate_is_optional_and_seen_when_given(tls_server: Any) -> None:
    _contexts, port, ca = tls_server
    anonymous = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate]),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    reply = await ask(anonymous)
    assert reply.svid_chain[0].subject == "none"
    assert reply.entries_count == 1  # a TCP peer address was found
    anonymous.close()
    agent = make_leaf(ca, "spiffe://example.org/spire/agent/x509pop/a")
    authenticated = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate], [agent.certificate], agent.key),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    assert (await ask(authenticated)).svid_chain[0].subject == "spiffe://example.org/spire/agent/x509pop/a"
    authenticated.close()


async def test_client_certificate_from_another_ca_is_refused(tls_server: Any) -> None:
    _, port, ca = tls_server
    stranger = make_leaf(make_ca(), "spiffe://example.org/spire/agent/x509pop/evil")
    channel = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate], [stranger.certificate], stranger.key),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, Exception)):
        await ask(channel)
    channel.close()


async def test_wrong_server_identity_is_refused_before_any_request(tls_server: Any) -> None:
    _, port, ca = tls_server
    before = WhoAmI.calls
    channel = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate]),
        server_id=match_id(SpiffeId.parse("spiffe://example.org/not/the/server")),
    )
    with pytest.raises(ServerIdentityError, match="unexpected server identity"):
        await ask(channel)
    channel.close()
    assert WhoAmI.calls == before


async def test_server_rotation_and_bundle_change_need_no_restart(tls_server: Any) -> None:
    contexts, port, old_ca = tls_server
    new_ca = make_ca(name="next CA")
    old_agent = make_leaf(old_ca, "spiffe://example.org/spire/agent/x509pop/old")
    new_svid = make_leaf(new_ca, SERVER_ID)
    contexts.update([new_svid.certificate], new_svid.key, [new_ca.certificate])
    # New connections see the new server SVID (trusted only through the new CA)...
    fresh = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([new_ca.certificate]),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    assert (await ask(fresh)).svid_chain[0].subject == "none"
    fresh.close()
    # ...and a client certificate of the CA no longer trusted is refused.
    stale = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([new_ca.certificate], [old_agent.certificate], old_agent.key),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    with pytest.raises(Exception):  # noqa: B017 - a TLS alert or a reset, depending on timing
        await ask(stale)
    stale.close()


async def test_unix_socket_peer_credentials_are_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = Server([WhoAmI()])
    await server.start(path=str(path))
    channel = Channel(path=str(path))
    reply = await ask(channel)
    channel.close()
    server.close()
    await server.wait_closed()
    assert reply.uptime == os.getpid()
    assert reply.agents_count == os.getuid()
    assert reply.entries_count == 0  # no TCP address on a Unix socket


def test_a_pinned_caller_is_no_longer_alive_once_it_exits(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket, time; s = socket.socket(socket.AF_UNIX); s.connect({str(tmp_path / 's.sock')!r}); time.sleep(30)",
        ]
    )
    connection, _ = listener.accept()
    try:
        caller = PinnedCaller.pin(connection)
        assert caller.pid == child.pid
        assert caller.start_time == process_start_time(child.pid)
        assert caller.alive()
    finally:
        child.kill()
        child.wait()
    assert not caller.alive()
    caller.close()
    # Accepted after the caller is gone: it cannot be pinned (with SO_PEERPIDFD) or, without
    # it, its /proc directory is gone.
    with pytest.raises(CallerNotPinned):
        PinnedCaller.pin(connection)
    connection.close()
    listener.close()


async def test_a_message_longer_than_the_receive_limit_is_refused_from_its_prefix(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = GrpcServer([WhoAmI()], max_receive_message_length=64)
    await server.start(path=str(path))
    channel = Channel(path=str(path))
    try:
        # GetInfoRequest is empty: a BytesValue stands in for it (its field is unknown there).
        method = channel.request(
            "/spire.api.server.debug.v1.Debug/GetInfo",
            Cardinality.UNARY_UNARY,
            wrappers_pb2.BytesValue,
            debug_pb2.GetInfoResponse,
        )
        async with method as stream:
            await stream.send_message(wrappers_pb2.BytesValue(value=b"x" * 63), end=True)  # 65 bytes encoded
            with pytest.raises(GRPCError) as refused:
                await stream.recv_message()
        assert refused.value.status is Status.RESOURCE_EXHAUSTED
        assert "larger than max (65 vs. 64)" in (refused.value.message or "")
        # A message within the limit is served, on the same connection.
        assert (await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest())).uptime == os.getpid()
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_server_keeps_serving_other_clients_after_a_failed_handshake(tls_server: Any) -> None:
    _, port, ca = tls_server
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01\x00\x05garbage")  # a broken ClientHello
    await writer.drain()
    writer.close()
    channel = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate]),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    assert (await ask(channel)).svid_chain[0].subject == "none"
    channel.close()


async def test_a_unix_socket_has_its_mode_before_it_accepts_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a permissive umask the socket file is born world-writable: were it listened on
    # before its chmod, a caller connecting in between would reach it despite its mode.
    path = tmp_path / "admin.sock"
    connectable_at_chmod: list[bool] = []
    chmod = os.chmod

    def chmod_and_probe(target: Any, mode: int, **kwargs: Any) -> None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(target))
            connectable_at_chmod.append(True)
        except ConnectionRefusedError:
            connectable_at_chmod.append(False)
        finally:
            probe.close()
        chmod(target, mode, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod_and_probe)
    previous = os.umask(0)
    server = GrpcServer([WhoAmI()])
    try:
        await server.start_unix(str(path), 0o770)
    finally:
        os.umask(previous)
    try:
        assert connectable_at_chmod == [False]
        assert path.stat().st_mode & 0o777 == 0o770
        channel = Channel(path=str(path))
        try:
            assert (await debug_grpc.DebugStub(channel).GetInfo(debug_pb2.GetInfoRequest())).uptime == os.getpid()
        finally:
            channel.close()
    finally:
        server.close()
        await server.wait_closed()


class LeafRecorder(debug_grpc.DebugBase):
    """Keeps what :func:`peer_leaf` answered for each call."""

    def __init__(self) -> None:
        self.leaves: list[PeerLeaf | None] = []

    async def GetInfo(self, stream: Any) -> None:
        await stream.recv_message()
        self.leaves.append(peer_leaf(stream))
        await stream.send_message(debug_pb2.GetInfoResponse())


async def test_a_connections_certificate_is_parsed_once_and_each_connection_gets_its_own() -> None:
    ca = make_ca()
    server_svid = make_leaf(ca, SERVER_ID)
    contexts = ServerTlsContexts()
    contexts.update([server_svid.certificate], server_svid.key, [ca.certificate])
    recorder = LeafRecorder()
    server = GrpcServer([recorder])
    port = free_port()
    await server.start_tcp("127.0.0.1", port, ssl=contexts.listener)
    channels = []
    try:
        for path in ("/spire/agent/x509pop/a", "/spire/agent/x509pop/b"):
            agent = make_leaf(ca, f"spiffe://example.org{path}")
            channel = SpiffeChannel(
                "127.0.0.1",
                port,
                ssl_context=client_tls_context([ca.certificate], [agent.certificate], agent.key),
                server_id=match_id(SpiffeId.parse(SERVER_ID)),
            )
            channels.append(channel)
            await ask(channel)
            await ask(channel)
        first, again, other, other_again = recorder.leaves
        assert first is not None
        assert other is not None
        assert again is first  # parsed on the connection's first call only
        assert other_again is other
        assert str(first.spiffe_id) == "spiffe://example.org/spire/agent/x509pop/a"
        assert str(other.spiffe_id) == "spiffe://example.org/spire/agent/x509pop/b"
        assert first.not_after == first.certificate.not_valid_after_utc.timestamp()
    finally:
        for channel in channels:
            channel.close()
        server.close()
        await server.wait_closed()


class Measurer:
    """Answers with the length of the bytes it received: a request larger than a TLS record."""

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/pyspire.test.Measurer/Length": Handler(
                self.length, Cardinality.UNARY_UNARY, wrappers_pb2.BytesValue, wrappers_pb2.Int64Value
            )
        }

    async def length(self, stream: Any) -> None:
        request = await stream.recv_message()
        await stream.send_message(wrappers_pb2.Int64Value(value=len(request.value)))


async def test_a_request_of_many_tls_records_arrives_whole(tls_server: Any) -> None:
    contexts, _, ca = tls_server
    server = GrpcServer([Measurer()])
    port = free_port()
    await server.start_tcp("127.0.0.1", port, ssl=contexts.listener)
    channel = SpiffeChannel(
        "127.0.0.1",
        port,
        ssl_context=client_tls_context([ca.certificate]),
        server_id=match_id(SpiffeId.parse(SERVER_ID)),
    )
    try:
        # 3 MiB: about 200 TLS records of at most 16 KiB each, under the 4 MiB receive limit.
        payload = os.urandom(3 * 1024 * 1024)
        method = channel.request(
            "/pyspire.test.Measurer/Length",
            Cardinality.UNARY_UNARY,
            wrappers_pb2.BytesValue,
            wrappers_pb2.Int64Value,
        )
        async with method as stream:
            await stream.send_message(wrappers_pb2.BytesValue(value=payload), end=True)
            answer = await stream.recv_message()
        assert answer is not None
        assert answer.value == len(payload)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


HOLD_TLS_CONNECTIONS = """
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[3])
context.check_hostname = False
held = []
for _ in range(int(sys.argv[2])):
    connection = context.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
    connection.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n")
    held.append(connection)
print("ready", flush=True)
sys.stdin.read()
"""


async def test_an_idle_tls_connection_costs_the_server_no_large_buffer(tls_server: Any, tmp_path: Path) -> None:
    # Agents keep their connection to the server open: asyncio's TLS layer gave each one a
    # 256 KiB buffer at accept, 2.5 GiB for ten thousand agents. The connections are held by
    # another process so only the server's allocations are counted here.
    _, port, ca = tls_server
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    connections = 32
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLD_TLS_CONNECTIONS,
            str(port),
            str(connections),
            str(bundle),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert (await asyncio.wait_for(holder.stdout.readline(), 30)) == b"ready\n"
            await asyncio.sleep(0.2)  # the server reads the last connection's preface
            per_connection = (tracemalloc.get_traced_memory()[0] - before) / connections
        finally:
            holder.kill()
            await holder.wait()
    finally:
        tracemalloc.stop()
    assert per_connection < 128 * 1024, f"{per_connection / 1024:.0f} KiB of Python memory per idle TLS connection"
