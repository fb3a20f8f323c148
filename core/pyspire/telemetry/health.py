"""The ``health_checks`` HTTP listener: ``/live`` and ``/ready`` as SPIRE serves them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

__all__ = ["HealthListener"]

_log = logging.getLogger(__name__)


class HealthListener:
    """A tiny HTTP/1.1 server answering liveness and readiness (200 or 503, JSON body)."""

    def __init__(
        self, address: str, port: int, live_path: str, ready_path: str, ready: Callable[[], dict[str, bool]]
    ) -> None:
        """Serve on ``address:port``; ``ready()`` returns named checks that must all be true."""
        self._address, self._port = address, port
        self._live, self._ready_path = live_path, ready_path
        self._ready = ready
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self._address, self._port)
        _log.info("Health checks listening", extra={"address": f"{self._address}:{self._port}"})

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            body: dict[str, object]
            if path == self._live:
                status, body = 200, {"live": True}
            elif path == self._ready_path:
                checks = self._ready()
                status, body = (200 if all(checks.values()) else 503), {"ready": all(checks.values()), **checks}
            else:
                status, body = 404, {"error": "not found"}
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
