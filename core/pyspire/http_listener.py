"""A minimal HTTP/1.1 listener on an event loop: the metrics and health endpoints, http_challenge's.

Each answers GET (and HEAD) with a small body; nothing here needs more than one request per
connection. Requests are read with a deadline and a size bound, so a slow or
hostile client cannot hold the daemon's loop or memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pyspire.listening import start_stream_server

__all__ = ["HttpListener", "Response"]

_log = logging.getLogger(__name__)

_READ_TIMEOUT = 10.0  # SPIRE's ReadHeaderTimeout for both endpoints
_MAX_HEADER_BYTES = 16 * 1024
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Response:
    """What a route answers."""

    status: int
    content_type: str
    body: bytes


Route = Callable[[], Awaitable[Response]]


class HttpListener:
    """Serves ``routes`` (path -> handler); ``default`` answers every other path (404 when None)."""

    def __init__(self, address: str, port: int, routes: Mapping[str, Route], default: Route | None = None) -> None:
        """Listen on ``address:port`` once started."""
        self.address, self.port = address, port
        self._routes = dict(routes)
        self._default = default
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Start listening (OSError when the address cannot be bound)."""
        self._server = await start_stream_server(self._handle, self.address, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _request_line(self, reader: asyncio.StreamReader) -> str:
        line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
        size = len(line)
        while True:
            header = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
            size += len(header)
            if size > _MAX_HEADER_BYTES:
                raise ValueError("request headers too large")
            if header in (b"\r\n", b"\n", b""):
                return line.decode("latin-1")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            parts = (await self._request_line(reader)).split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            route = self._routes.get(path, self._default)
            if method not in ("GET", "HEAD"):
                response = Response(405, "text/plain; charset=utf-8", b"method not allowed\n")
            elif route is None:
                response = Response(404, "text/plain; charset=utf-8", b"404 page not found\n")
            else:
                try:
                    response = await route()
                except Exception:
                    _log.exception("HTTP handler failed", extra={"path": path})
                    response = Response(500, "text/plain; charset=utf-8", b"internal error\n")
            head = (
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + response.body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
