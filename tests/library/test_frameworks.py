"""The tls contexts, unchanged, in what Python services use: asyncio streams, grpclib, httpx, requests, aiohttp.

Each framework gets the same three connections against a real agent's identities: the
authorized client (both ends learn the other's SPIFFE ID), an intruder the server refuses, and
a client that refuses a server with an unexpected ID. docs/workload-library.md shows the same
code as examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import requests.adapters
from aiohttp import web
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server, Stream
from pyspire.spiffe import AsyncX509Source, X509Source, tls

from tests.support.free_port import free_port
from tests.support.identities import CLIENT, INTRUDER, SERVER, Deployment, pick

REFUSED_BY_CLIENT = f"certificate verify failed: {SERVER} is not authorized"


class WhoAmI(http.server.BaseHTTPRequestHandler):
    """Answers with the SPIFFE ID the client proved (self.connection is the TLS socket)."""

    def do_GET(self) -> None:
        body = str(tls.peer_spiffe_id(self.connection)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def https_url(server_source: X509Source) -> Iterator[str]:
    """A stdlib HTTPS server with a SPIFFE server context: only /client may call."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WhoAmI)
    context = tls.server_context(server_source, tls.authorize_id(CLIENT))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# -- httpx ------------------------------------------------------------------------------------


def test_httpx(https_url: str, client_source: X509Source, intruder_source: X509Source) -> None:
    with httpx.Client(verify=tls.client_context(client_source, tls.authorize_id(SERVER))) as client:
        response = client.get(https_url)
        assert response.status_code == 200
        assert response.text == CLIENT
        assert client.get(https_url).text == CLIENT  # a second request (a new ALPN setting costs nothing)
    with (
        httpx.Client(verify=tls.client_context(intruder_source, tls.authorize_id(SERVER))) as intruder,
        pytest.raises(httpx.TransportError),
    ):
        intruder.get(https_url)
    with (
        httpx.Client(verify=tls.client_context(client_source, tls.authorize_id(INTRUDER))) as wary,
        pytest.raises(httpx.ConnectError, match=REFUSED_BY_CLIENT),
    ):
        wary.get(https_url)


def test_httpx_async(https_url: str, deployment: Deployment) -> None:
    async def call() -> str:
        async with AsyncX509Source(deployment.agent.address, picker=pick("client")) as source:
            context = tls.client_context(source, tls.authorize_id(SERVER))
            async with httpx.AsyncClient(verify=context) as client:
                return (await client.get(https_url)).text

    assert asyncio.run(call()) == CLIENT


# -- requests ---------------------------------------------------------------------------------


class SpiffeAdapter(requests.adapters.HTTPAdapter):
    """Hands urllib3 the SPIFFE context; urllib3's own host name check is off (the SPIFFE ID identifies)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self._context, assert_hostname=False, **kwargs)


def session_for(context: ssl.SSLContext) -> requests.Session:
    session = requests.Session()
    session.mount("https://", SpiffeAdapter(context))
    return session


def test_requests(https_url: str, client_source: X509Source, intruder_source: X509Source) -> None:
    with session_for(tls.client_context(client_source, tls.authorize_id(SERVER))) as session:
        response = session.get(https_url, timeout=10)
        assert response.status_code == 200
        assert response.text == CLIENT
    with (
        session_for(tls.client_context(intruder_source, tls.authorize_id(SERVER))) as intruder,
        pytest.raises(requests.exceptions.ConnectionError),
    ):
        intruder.get(https_url, timeout=10)
    with (
        session_for(tls.client_context(client_source, tls.authorize_id(INTRUDER))) as wary,
        pytest.raises(requests.exceptions.SSLError, match=REFUSED_BY_CLIENT),
    ):
        wary.get(https_url, timeout=10)


# -- aiohttp ----------------------------------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    return web.Response(text=str(tls.peer_spiffe_id(request.transport)))


def test_aiohttp(deployment: Deployment) -> None:
    async def run() -> None:
        async with (
            AsyncX509Source(deployment.agent.address, picker=pick("server")) as server_source,
            AsyncX509Source(deployment.agent.address, picker=pick("client")) as client_source,
            AsyncX509Source(deployment.agent.address, picker=pick("intruder")) as intruder_source,
        ):
            app = web.Application()
            app.router.add_get("/", whoami)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            server_context = tls.server_context(server_source, tls.authorize_id(CLIENT))
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context).start()
            url = f"https://127.0.0.1:{port}/"
            try:
                async with aiohttp.ClientSession() as session:
                    context = tls.client_context(client_source, tls.authorize_id(SERVER))
                    async with session.get(url, ssl=context) as response:
                        assert response.status == 200
                        assert await response.text() == CLIENT
                    intruder = tls.client_context(intruder_source, tls.authorize_id(SERVER))
                    with pytest.raises(aiohttp.ClientError):  # the server hangs up after its check
                        await session.get(url, ssl=intruder)
                    wary = tls.client_context(client_source, tls.authorize_id(INTRUDER))
                    with pytest.raises(aiohttp.ClientConnectorCertificateError, match=REFUSED_BY_CLIENT):
                        await session.get(url, ssl=wary)
            finally:
                await runner.cleanup()

    asyncio.run(run())


# -- asyncio streams --------------------------------------------------------------------------


def test_asyncio_streams(deployment: Deployment) -> None:
    async def run() -> None:
        async with (
            AsyncX509Source(deployment.agent.address, picker=pick("server")) as server_source,
            AsyncX509Source(deployment.agent.address, picker=pick("client")) as client_source,
            AsyncX509Source(deployment.agent.address, picker=pick("intruder")) as intruder_source,
        ):
            callers: list[str] = []

            async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                callers.append(str(tls.peer_spiffe_id(writer)))
                writer.write(await reader.readline())
                await writer.drain()
                writer.close()

            context = tls.server_context(server_source, tls.authorize_id(CLIENT))
            server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
            port = server.sockets[0].getsockname()[1]
            async with server:
                client = tls.client_context(client_source, tls.authorize_id(SERVER))
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
                assert str(tls.peer_spiffe_id(writer)) == SERVER
                writer.write(b"hello\n")
                assert await reader.readline() == b"hello\n"
                writer.close()

                intruder = tls.client_context(intruder_source, tls.authorize_id(SERVER))
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=intruder)
                writer.write(b"let me in\n")
                with contextlib.suppress(ConnectionError, ssl.SSLError):  # or an error: the server hung up
                    assert await reader.readline() == b""
                writer.close()

                wary = tls.client_context(client_source, tls.authorize_id(INTRUDER))
                with pytest.raises(tls.PeerRefusedError, match=REFUSED_BY_CLIENT):
                    await asyncio.open_connection("127.0.0.1", port, ssl=wary)
            assert callers == [CLIENT]

    asyncio.run(run())


# -- grpclib ----------------------------------------------------------------------------------


class RecordingHealth(Health):
    """grpclib's health service, remembering who called (stream.peer holds the TLS connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[str] = []

    async def Check(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        self.callers.append(str(tls.peer_spiffe_id(stream.peer)))
        await super().Check(stream)


def test_grpclib(deployment: Deployment) -> None:
    async def run() -> None:
        async with (
            AsyncX509Source(deployment.agent.address, picker=pick("server")) as server_source,
            AsyncX509Source(deployment.agent.address, picker=pick("client")) as client_source,
            AsyncX509Source(deployment.agent.address, picker=pick("intruder")) as intruder_source,
        ):
            health = RecordingHealth()
            server = Server([health])
            server_context = tls.server_context(server_source, tls.authorize_id(CLIENT))
            server_context.set_alpn_protocols(["h2"])
            port = free_port()
            await server.start("127.0.0.1", port, ssl=server_context)
            try:

                async def check(context: ssl.SSLContext) -> int:
                    context.set_alpn_protocols(["h2"])
                    channel = Channel("127.0.0.1", port, ssl=context)
                    try:
                        reply = await HealthStub(channel).Check(HealthCheckRequest(), timeout=10)
                        return int(reply.status)
                    finally:
                        channel.close()

                assert await check(tls.client_context(client_source, tls.authorize_id(SERVER))) == (
                    HealthCheckResponse.SERVING
                )
                assert health.callers == [CLIENT]
                with pytest.raises((StreamTerminatedError, ConnectionError)):  # the server hung up
                    await check(tls.client_context(intruder_source, tls.authorize_id(SERVER)))
                with pytest.raises(tls.PeerRefusedError, match=REFUSED_BY_CLIENT):
                    await check(tls.client_context(client_source, tls.authorize_id(INTRUDER)))
                assert health.callers == [CLIENT]
            finally:
                server.close()
                await server.wait_closed()

    asyncio.run(run())
