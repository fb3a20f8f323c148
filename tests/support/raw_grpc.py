"""gRPC calls written frame by frame with ``h2``, over a socket the test already holds.

For what no gRPC client lets a test do: call over a connection another process opened (and
handed over), or send a request whose length prefix promises more than the server should
ever read, watching what the server answers while it is still being sent.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

CHUNK = 16 * 1024


@dataclass
class Reply:
    """What the server sent on one stream."""

    messages: list[bytes] = field(default_factory=list)
    status: int | None = None
    """The ``grpc-status`` (None when the stream or connection ended without one)."""
    message: str = ""
    ended: str = ""
    """Why reading stopped: "trailers", "reset", "closed" or "first message"."""


class RawGrpcConnection:
    """An HTTP/2 client connection on ``sock`` (a connected Unix socket, or TLS with ALPN h2)."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, timeout: float = 10.0) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._h2.initiate_connection()
        self._flush()
        self._replies: dict[int, Reply] = {}
        self._buffers: dict[int, bytes] = {}

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._sock.sendall(data)

    def _open(self, path: str, metadata: tuple[tuple[str, str], ...]) -> int:
        stream_id = self._h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        self._h2.send_headers(stream_id, headers)
        self._replies[stream_id] = Reply()
        self._buffers[stream_id] = b""
        return stream_id

    def _pump(self, stream_id: int) -> bool:
        """Read once from the socket; True while the stream is still open."""
        reply = self._replies[stream_id]
        try:
            data = self._sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            reply.ended = reply.ended or "closed"
            return False
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            reply.ended = reply.ended or "closed"
            return False
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id in self._buffers:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._buffers[event.stream_id] += event.data
                self._split(event.stream_id)
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers = dict(event.headers)
                if "grpc-status" in headers and event.stream_id in self._replies:
                    target = self._replies[event.stream_id]
                    target.status = int(headers["grpc-status"])
                    target.message = headers.get("grpc-message", "")
                    target.ended = target.ended or "trailers"
            elif isinstance(event, h2.events.StreamReset) and event.stream_id in self._replies:
                self._replies[event.stream_id].ended = self._replies[event.stream_id].ended or "reset"
            elif isinstance(event, h2.events.ConnectionTerminated):
                reply.ended = reply.ended or "closed"
        self._flush()
        return not reply.ended

    def _split(self, stream_id: int) -> None:
        buffer = self._buffers[stream_id]
        while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[1:5], "big"):
            length = int.from_bytes(buffer[1:5], "big")
            self._replies[stream_id].messages.append(buffer[5 : 5 + length])
            buffer = buffer[5 + length :]
        self._buffers[stream_id] = buffer

    def call(
        self, path: str, request: bytes, metadata: tuple[tuple[str, str], ...] = (), *, first_message_only: bool = True
    ) -> Reply:
        """One request; reads until the trailers, or the first message of a streamed reply."""
        stream_id = self._open(path, metadata)
        self._h2.send_data(stream_id, b"\0" + len(request).to_bytes(4, "big") + request, end_stream=True)
        self._flush()
        reply = self._replies[stream_id]
        while self._pump(stream_id):
            if first_message_only and reply.messages:
                reply.ended = "first message"
                break
        return reply

    def call_without_message(self, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> Reply:
        """Open a call and end it without sending a request message (grpclib's client will not)."""
        stream_id = self._open(path, metadata)
        self._h2.end_stream(stream_id)
        self._flush()
        while self._pump(stream_id):
            pass
        return self._replies[stream_id]

    def send_oversized(
        self, path: str, declared: int, metadata: tuple[tuple[str, str], ...] = (), deadline: float = 60.0
    ) -> tuple[Reply, int]:
        """A request whose prefix declares ``declared`` bytes, sent until the server ends it; (reply, bytes sent)."""
        stream_id = self._open(path, metadata)
        self._h2.send_data(stream_id, b"\0" + declared.to_bytes(4, "big"))
        self._flush()
        reply = self._replies[stream_id]
        sent = 0
        zeros = bytes(CHUNK)
        give_up = time.monotonic() + deadline
        while sent < declared and not reply.ended and time.monotonic() < give_up:
            window = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if window <= 0:
                self._pump(stream_id)  # wait for the server to read (and open the window) or answer
                continue
            size = min(window, CHUNK, declared - sent)
            try:
                self._h2.send_data(stream_id, zeros[:size], end_stream=sent + size == declared)
            except h2.exceptions.StreamClosedError:
                break
            sent += size
            self._flush()
        while not reply.ended and time.monotonic() < give_up:
            self._pump(stream_id)
        return reply, sent
