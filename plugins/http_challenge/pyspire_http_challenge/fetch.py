"""The server's side of the challenge: one HTTP GET to the agent, bounded in time and size.

As SPIRE's server fetches it: plain HTTP to ``<hostname>:<port>``, redirects refused (a
redirect could send the check to any other host), at most 64 bytes of the body read, the
whole exchange within one deadline. The deadline covers connecting, sending and every byte
of the response: a listener that accepts and never answers, or answers a byte at a time,
holds a server thread no longer than the deadline. The connection goes straight to the
agent's host; proxy variables are not used (see the README).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from typing import Any, Final

__all__ = ["MAX_BODY_BYTES", "FetchError", "fetch_challenge"]

MAX_BODY_BYTES: Final = 64
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class FetchError(Exception):
    """The agent's answer could not be fetched; the message says why."""


def fetch_challenge(hostname: str, port: int, path: str, timeout: float) -> bytes:
    """The first :data:`MAX_BODY_BYTES` bytes of ``GET http://hostname:port<path>``.

    Raises :class:`FetchError` when the host cannot be resolved or reached, the response is
    not HTTP or is a redirect, or all of it did not arrive within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    where = f"http://{hostname}:{port}{path}"
    try:
        addresses = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise FetchError(f"GET {where}: cannot resolve {hostname}: {err}") from None
    sock = _connect(addresses, deadline, where)
    # Past the deadline the socket is shut down under whatever read is waiting on it.
    expired = threading.Event()
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _expire, (sock, expired))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection = http.client.HTTPConnection(hostname, port)
        connection.sock = sock
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"{hostname}:{port}")
        connection.putheader("User-Agent", "pyspire-server")
        connection.endheaders()
        response = connection.getresponse()
        if response.status in _REDIRECTS and response.getheader("Location") is not None:
            raise FetchError(f"GET {where}: HTTP {response.status}: http redirects are disabled")
        body = response.read(MAX_BODY_BYTES)
        if expired.is_set():
            # The shutdown can end a read as a clean end of the stream: what came is cut short.
            raise TimeoutError
        return body
    except (OSError, http.client.HTTPException) as err:
        if expired.is_set() or isinstance(err, TimeoutError):
            raise FetchError(f"GET {where}: no complete response within {timeout:g} s") from None
        raise FetchError(f"GET {where}: {type(err).__name__}: {err}") from None
    finally:
        watchdog.cancel()
        watchdog.join()  # a shutdown under way ends before the descriptor is released
        sock.close()


def _connect(addresses: list[tuple[Any, ...]], deadline: float, where: str) -> socket.socket:
    """A connection to the first of ``addresses`` that accepts before the deadline."""
    failure: OSError | None = None
    for family, kind, protocol, _, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, protocol)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
        except OSError as err:
            sock.close()
            failure = err
            continue
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        return sock
    if failure is None or isinstance(failure, TimeoutError):
        raise FetchError(f"GET {where}: could not connect within the deadline")
    raise FetchError(f"GET {where}: cannot connect: {failure.strerror or failure}")


def _expire(sock: socket.socket, expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(OSError):  # already closed: the fetch finished as the deadline came
        sock.shutdown(socket.SHUT_RDWR)
