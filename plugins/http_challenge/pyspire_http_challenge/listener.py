"""The agent's HTTP listener for the challenge: opened for one attestation, closed after it.

The listener is the daemons' own (:class:`pyspire.http_listener.HttpListener` on
:func:`pyspire.listening.tcp_listener`: every address of both families, the kernel's full
backlog, calm when descriptors run out), run on an event loop of the plugin's own in a
thread, because the hooks that open and feed it are called from the agent's worker threads.

It opens when the payload is made (so a random port is known, and a port that cannot be
bound fails the attestation at once) and answers 404 until the challenge arrives. Then it
serves the nonce at the agent's path. The hooks never learn when the server is done, so
it is closed :data:`SERVE_SECONDS` after the answer (the server's 10 s fetch, with room for
the answer to reach it), or by the next attestation, or when the agent stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from pyspire.http_listener import HttpListener, Response
from pyspire.listening import AcceptExhaustionLog

__all__ = ["SERVE_SECONDS", "ChallengeListener"]

SERVE_SECONDS: Final = 20.0
_CALL_TIMEOUT: Final = 10.0
"""How long a hook waits for the listener's loop (binding, closing): a moment, in practice."""
_NOT_FOUND: Final = Response(404, "text/plain; charset=utf-8", b"404 page not found\n")

T = TypeVar("T")


class ChallengeListener:
    """One listener at a time serving one nonce at ``path``."""

    def __init__(self, path: str) -> None:
        """Serve at ``path`` once opened; the loop's thread starts with the first :meth:`open`."""
        self._path = path
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: HttpListener | None = None
        self._nonce: bytes | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._expiring: asyncio.Task[None] | None = None

    def open(self, port: int) -> int:
        """Close the previous listener, listen on every address at ``port`` (0: any); the port.

        ``OSError`` when the port cannot be bound.
        """
        with self._lock:
            return self._run(self._open(port))

    def serve(self, nonce: str) -> None:
        """Answer with ``nonce`` from now on, for :data:`SERVE_SECONDS`."""
        with self._lock:
            self._run(self._serve(nonce))

    def close(self) -> None:
        """Close the listener and stop the loop's thread."""
        with self._lock:
            if self._loop is None:
                return
            self._run(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(_CALL_TIMEOUT)
            self._loop.close()
            self._loop = self._thread = None

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            AcceptExhaustionLog().install(self._loop)
            self._thread = threading.Thread(target=self._loop.run_forever, name="http_challenge", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(_CALL_TIMEOUT)

    async def _open(self, port: int) -> int:
        await self._close()
        listener = HttpListener("", port, {self._path: self._answer}, default=None)
        await listener.start()
        self._listener = listener
        return listener.port

    async def _serve(self, nonce: str) -> None:
        self._nonce = f"{nonce}\n".encode()
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(SERVE_SECONDS, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._expiring = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._nonce = None
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

    async def _answer(self) -> Response:
        if self._nonce is None:
            return _NOT_FOUND
        return Response(200, "text/plain; charset=utf-8", self._nonce)
