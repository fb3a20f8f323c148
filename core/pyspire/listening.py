"""Listening sockets as SPIRE's: the kernel's full backlog, and calm when descriptors run out.

SPIRE's listeners come from Go's ``net.Listen``, which asks for the kernel's ``somaxconn``
(4096 on current Linux); asyncio asks for 100 unless told, so a burst of 500 workloads
connecting at once lost 89 of them. :func:`listen_backlog` is the number to pass.

When the process runs out of file descriptors, ``accept()`` fails with EMFILE. Go's servers
then sleep and retry. asyncio's accept loop (CPython 3.11's) reports the failure,
stops reading the socket and schedules a retry a second later — but it goes on calling
``accept()`` up to ``backlog`` times in the same pass, and each failure schedules one more
retry. With the full backlog that is 4,096 retries per pass, and each retry that finds
descriptors still short schedules thousands more: the retries grow without bound until the
loop does nothing else (an agent held so for three seconds ignored SIGTERM for twenty).
:class:`ListeningSocket` ends the pass at the first failure, so each listener has one retry
pending at a time; :func:`unix_listener` and :func:`tcp_listener` make one, and every
pyspire listener is one. :class:`AcceptExhaustionLog` reports the exhaustion once per
interval instead of a traceback per failure.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

__all__ = [
    "AcceptExhaustionLog",
    "ListeningSocket",
    "listen_backlog",
    "start_stream_server",
    "tcp_listener",
    "unix_listener",
]

_log = logging.getLogger(__name__)

_SOMAXCONN: Final = Path("/proc/sys/net/core/somaxconn")
_DEFAULT_BACKLOG: Final = 4096
"""Linux's own somaxconn default (since 5.4), when the kernel's setting cannot be read."""
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REST: Final = 0.5
"""How long ``accept()`` rests after running out: less than asyncio's one-second retry, so
the retry itself accepts for real."""


def listen_backlog() -> int:
    """The listen backlog Go's ``net.Listen`` uses: the kernel's ``net.core.somaxconn``."""
    try:
        value = int(_SOMAXCONN.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_BACKLOG
    return value if value > 0 else _DEFAULT_BACKLOG


class ListeningSocket(socket.socket):
    """A listening socket whose ``accept()`` rests for a moment after the process runs out.

    The first ``accept()`` that fails for want of descriptors or memory raises as usual (the
    event loop stops reading the socket and schedules its retry); those that follow in the
    same pass, and any other within :data:`_REST`, raise :class:`BlockingIOError` without
    asking the kernel, which is how the loop learns the queue is "empty" and ends the pass.
    Connections wait in the listen queue meanwhile.
    """

    __slots__ = ("_rest_until",)

    def __init__(self, family: int) -> None:
        """A new, unbound stream socket of ``family``.

        An internet socket is made with protocol TCP, not 0: asyncio turns Nagle's algorithm
        off only for connections whose protocol says TCP, and with it on every small reply
        waited for the peer's delayed ACK (40 ms).
        """
        proto = socket.IPPROTO_TCP if family in (socket.AF_INET, socket.AF_INET6) else 0
        super().__init__(family, socket.SOCK_STREAM, proto)
        self._rest_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        """The next connection, as :meth:`socket.socket.accept`, unless resting."""
        now = time.monotonic()
        if now < self._rest_until:
            raise BlockingIOError(errno.EAGAIN, "not accepting for a moment: the process ran out of descriptors")
        try:
            return super().accept()
        except OSError as err:
            if err.errno in _EXHAUSTED:
                self._rest_until = now + _REST
            raise


def unix_listener(path: str, mode: int) -> ListeningSocket:
    """A socket bound at ``path`` with ``mode``, not yet listening.

    It is bound, given its mode, and only then listened on (by the server it is given to):
    binding creates the file with whatever the umask leaves, and a connection accepted
    before a later chmod would have reached a socket its mode should have kept the caller from.
    """
    sock = ListeningSocket(socket.AF_UNIX)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_listener(host: str | None, port: int) -> ListeningSocket:
    """A TCP socket bound at ``host:port``, not yet listening, as Go's ``net.Listen`` binds.

    An empty host, or ``::``, listens on every address of both families (IPv4 alone where
    IPv6 is off); an IP address on that address; a host name on one of its addresses, IPv4
    first. ``OSError`` (``socket.gaierror`` among them) when it cannot be bound.
    """
    if host in (None, "", "::"):
        try:
            return _bound(socket.AF_INET6, ("::", port), dual_stack=True)
        except OSError as err:
            if host == "::" or err.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise  # a port in use is in use for IPv4 too
            return _bound(socket.AF_INET, ("0.0.0.0", port), dual_stack=False)  # noqa: S104 - asked for every address
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, address = found[0]
    return _bound(family, address, dual_stack=False)


async def start_stream_server(
    client_connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | None,
    port: int,
    **kwargs: Any,
) -> asyncio.Server:
    """:func:`asyncio.start_server` on a :func:`tcp_listener`, with :func:`listen_backlog`'s backlog."""
    sock = tcp_listener(host, port)
    try:
        return await asyncio.start_server(client_connected, sock=sock, backlog=listen_backlog(), **kwargs)
    except BaseException:
        sock.close()
        raise


def _bound(family: int, address: Any, *, dual_stack: bool) -> ListeningSocket:
    sock = ListeningSocket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class AcceptExhaustionLog:
    """An event-loop exception handler for listeners that run out of descriptors.

    It reports a failed ``accept()`` once per interval (with how many were not reported),
    and drops the one retry asyncio may still have pending for a listener closed since
    (it fails on the closed socket's descriptor, -1): a daemon stopping moments after running
    out would otherwise end its log with that traceback.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Report at most once every ``interval`` seconds."""
        self._interval = interval
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle ``loop``'s exceptions; everything else goes to the handler it had."""
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, ValueError) and _raised_in(error, "_start_serving"):
            _log.debug("A retry of accept() found its listener closed")
            return
        accepting = str(context.get("message", "")).startswith("socket.accept()")
        if not (accepting and isinstance(error, OSError) and error.errno in _EXHAUSTED):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < self._interval:
            self._unreported += 1
            return
        _log.error(
            "Cannot accept connections: the process is out of file descriptors or memory; retrying every second",
            extra={
                "error": error.strerror,
                "socket": str(context.get("socket", "")),
                "unreported_since_last": self._unreported,
            },
        )
        self._reported_at = now
        self._unreported = 0


def _raised_in(error: BaseException, function: str) -> bool:
    return any(frame.name == function for frame in traceback.extract_tb(error.__traceback__))
