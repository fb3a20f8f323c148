"""An HTTP peer on loopback that answers the server half's fetch as a test tells it to.

It stands where an agent (or whatever holds the port) would be: a real listening socket,
real connections, bytes written as given, so the server half's client meets well-formed
answers, wrong ones, redirects, silence and a trickle, and the test sees every request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Behaviour = Callable[[socket.socket, "Responder"], None]
"""Writes the response to a connection whose request has been read (``Responder.requests``)."""


def ok(body: bytes, *, chunked: bool = False) -> bytes:
    """A 200 response carrying ``body``, with a length or in one chunk."""
    if chunked:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)


@dataclass
class Responder:
    """Listens on 127.0.0.1 (``port`` 0: any) and answers each request with ``behaviour``."""

    behaviour: Behaviour
    port: int = 0
    nonce: str = ""
    """The nonce the server half sent, for behaviours that answer with it (set by :meth:`challenge`)."""
    requests: list[bytes] = field(default_factory=list)
    _sock: socket.socket = field(init=False)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Responder:
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        # A close alone may leave the socket listening while the accepting thread holds it.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def challenge(self, data: bytes) -> bytes:
        """The server half's ``challenge`` callable: keeps the nonce, answers as an agent does."""
        self.nonce = json.loads(data)["nonce"]
        return b"\n"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                self.requests.append(request)
                self.behaviour(conn, self)
            except OSError:
                pass  # the server half hung up: what some tests want


def answer_nonce(conn: socket.socket, responder: Responder) -> None:
    conn.sendall(ok(f"{responder.nonce}\n".encode()))


def answer(body: bytes, *, chunked: bool = False) -> Behaviour:
    def behaviour(conn: socket.socket, responder: Responder) -> None:
        conn.sendall(ok(body.replace(b"{nonce}", responder.nonce.encode()), chunked=chunked))

    return behaviour


def redirect(location: str) -> Behaviour:
    def behaviour(conn: socket.socket, responder: Responder) -> None:
        conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (location.encode(), len(responder.nonce), responder.nonce.encode())
        )

    return behaviour


def silent(conn: socket.socket, responder: Responder) -> None:
    """Reads the request and never answers (until the server half hangs up)."""
    conn.recv(1)


def trickle(conn: socket.socket, responder: Responder) -> None:
    """A status line, then one header byte every 0.1 s, forever: each read alone is quick."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not responder.stopped.is_set():
        conn.sendall(b"X")
        time.sleep(0.1)
