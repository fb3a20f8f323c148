"""The bundle endpoint: this trust domain's SPIFFE bundle on ``GET /`` over HTTPS.

Partners poll it, so it answers one thing and holds nothing: each request reads the bundle
as the server has it now (new authorities appear as soon as they are prepared, as the
Federation standard asks). It speaks just enough HTTP/1.1 for that — one request per
connection, a bounded header block read under a deadline — so a slow or malformed client
costs a closed connection and nothing else.

Profiles (``federation.bundle_endpoint.profile``): ``https_spiffe`` serves with the server's
own X509-SVID and follows its rotation; ``https_web`` serves a WebPKI certificate read from
files and read again every ``file_sync_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.listening import start_stream_server
from pyspire.spiffe import Bundle
from pyspire.spiffe.pem import pem_certificates
from pyspire.transport import ServerTlsContexts

__all__ = ["BundleEndpointServer", "load_serving_certificate"]

_log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
REQUEST_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def load_serving_certificate(cert_file: Path, key_file: Path) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """The chain and key of an ``https_web`` profile; ValueError/OSError naming the file at fault."""
    chain = pem_certificates(cert_file.read_bytes())
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{key_file}: not an unencrypted PEM private key: {err}") from None
    return chain, key


class BundleEndpointServer:
    """Serves ``current_bundle()`` as a SPIFFE bundle document to every ``GET /``."""

    def __init__(self, address: str, port: int, tls: ServerTlsContexts, current_bundle: Callable[[], Bundle | None]):
        self._address = address
        self._port = port
        self._tls = tls
        self._current_bundle = current_bundle
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await start_stream_server(
            self._handle,
            self._address,
            self._port,
            ssl=self._tls.listener,
            ssl_handshake_timeout=REQUEST_TIMEOUT,
            limit=MAX_HEADER_BYTES,
        )
        _log.info("Serving the bundle endpoint", extra={"address": f"{self._address}:{self.port}"})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, body = self._answer(head.split(b"\r\n", 1)[0])
            writer.write(_response(status, body))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ssl.SSLError):
            pass  # the client went away, sent too much, or too slowly: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def _answer(self, request_line: bytes) -> tuple[int, bytes]:
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b'{"error": "malformed request line"}'
        method, target = parts[0], parts[1]
        if method != "GET":
            return 405, b'{"error": "only GET is served"}'
        if target.split("?", 1)[0] != "/":
            return 404, b'{"error": "the bundle is served on /"}'
        bundle = self._current_bundle()
        if bundle is None:
            return 503, b'{"error": "no bundle yet"}'
        return 200, json.dumps(bundle.to_spiffe_document(), indent=2).encode()


def _response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n" + ("Allow: GET\r\n" if status == 405 else "") + "Connection: close\r\n\r\n"
    )
    return head.encode() + body
