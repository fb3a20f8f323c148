"""Sockets and TLS: who is calling, and TLS contexts that follow SVID and bundle rotation.

Everything that depends on grpclib's or OpenSSL's internals lives here and nowhere else:

- :class:`GrpcServer`: grpclib's server as every pyspire listener needs it: a message
  larger than gRPC's 4 MiB receive limit is refused from its length prefix, before any of it
  is buffered, and Unix-socket callers can be pinned when their connection is accepted;
- the caller of a gRPC stream: its Unix-socket credentials (``SO_PEERCRED``), its TCP
  address, its TLS certificate, and the process pinned at accept (:class:`PinnedCaller`,
  so PID reuse cannot take over an identity);
- :class:`ServerTlsContexts`: the server side, presenting the current SVID and verifying
  optional client certificates against the current bundle. A new context is built on every
  change and swapped in per handshake, so rotation needs no restart; no session tickets are
  issued and a resumed session carries no identity, so no call skips verification against
  the current bundle;
- :class:`SpiffeChannel`: the client side, a grpclib channel that checks the server's SPIFFE
  ID right after the TLS handshake, before any request is sent, and that keeps a response a
  grpc-go server completed and then reset (:func:`keep_completed_responses`).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import os
import signal
import socket
import ssl
import struct
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpclib.client
import grpclib.server
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from h2.errors import ErrorCodes
from h2.events import StreamReset

from pyspire.listening import ListeningSocket, listen_backlog, tcp_listener, unix_listener
from pyspire.spiffe import MatchError, SpiffeId
from pyspire.spiffe.pem import der_certificate
from pyspire.spiffe.tls import load_identity
from pyspire.spiffe.x509svid import leaf_spiffe_id

__all__ = [
    "MAX_RECEIVE_MESSAGE_LENGTH",
    "CallerNotPinned",
    "GrpcServer",
    "PeerCredentials",
    "PinnedCaller",
    "ResumedSessionError",
    "ServerTlsContexts",
    "SpiffeChannel",
    "client_tls_context",
    "keep_completed_responses",
    "peer_address",
    "peer_credentials",
    "pinned_caller",
    "unix_socket_in_use",
]

_log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
"""Linux >= 6.5: a pidfd of the process that connected (Python 3.11 lacks the constant)."""

MAX_RECEIVE_MESSAGE_LENGTH = 4 * 1024 * 1024
"""gRPC's default receive limit (grpc-go's, which SPIRE keeps on every server it runs)."""


@dataclass(frozen=True)
class PeerCredentials:
    """The process at the other end of a Unix socket, as the kernel recorded it at connect."""

    pid: int
    uid: int
    gid: int


def _transport(stream: Any) -> asyncio.BaseTransport:
    # grpclib exposes the connection's transport only through Peer's private attribute; this
    # module is the one place that reaches for it (pinned to grpclib 0.4.x in pyproject).
    return stream.peer._transport  # type: ignore[no-any-return]


def peer_credentials(stream: Any) -> PeerCredentials | None:
    """The caller's pid/uid/gid when the stream arrived over a Unix socket, else None."""
    sock = _transport(stream).get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return PeerCredentials(pid, uid, gid)


def peer_address(stream: Any) -> str | None:
    """The caller's IP address when the stream arrived over TCP, else None."""
    name = _transport(stream).get_extra_info("peername")
    if isinstance(name, tuple) and name:
        return str(name[0])
    return None


class ResumedSessionError(Exception):
    """The caller resumed an earlier TLS session: its certificate was not verified in this handshake."""


@dataclass(frozen=True, slots=True)
class PeerLeaf:
    """The certificate a TLS caller presented, parsed once for its connection."""

    certificate: x509.Certificate
    spiffe_id: SpiffeId | None
    """Its SPIFFE ID, or None when it is no X509-SVID leaf."""
    not_after: float
    """Its expiry as a POSIX timestamp."""


# A connection's verified certificate, parsed on its first call. Every agent call used to
# parse it again (an eighth of an unchanged sync's CPU, bench/profile_sync.py). The DER is
# still fetched and compared on each call, so a renegotiated connection is parsed afresh.
_PARSED: weakref.WeakKeyDictionary[asyncio.BaseTransport, tuple[bytes, PeerLeaf | None]] = weakref.WeakKeyDictionary()


def peer_leaf(stream: Any) -> PeerLeaf | None:
    """The certificate the caller presented in TLS (verified by OpenSSL in this handshake), or None.

    Raises :class:`ResumedSessionError` for a resumed session: its certificate was verified
    against the bundle of an earlier handshake, which may since have dropped the CA that
    signed it (or the client may since have been banned). The server issues no session
    tickets, as SPIRE's does not, but Python cannot turn off OpenSSL's TLS 1.2 session-ID
    cache, so such a session is refused here instead.
    """
    transport = _transport(stream)
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    if ssl_object.session_reused:
        raise ResumedSessionError("the client resumed a TLS session; reconnect with a full handshake")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    parsed = _PARSED.get(transport)
    if parsed is None or parsed[0] != der:
        parsed = _PARSED[transport] = (der, _parse_leaf(der))
    return parsed[1]


def _parse_leaf(der: bytes) -> PeerLeaf | None:
    try:
        certificate = der_certificate(der)
    except ValueError:
        return None  # OpenSSL took it, but it is no certificate pyspire can read: no identity
    try:
        spiffe_id: SpiffeId | None = leaf_spiffe_id(certificate)
    except ValueError:  # X509SvidError included
        spiffe_id = None
    return PeerLeaf(certificate, spiffe_id, certificate.not_valid_after_utc.timestamp())


def _start_time(stat: bytes) -> int | None:
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, or None if it is gone."""
    try:
        return _start_time(Path(f"/proc/{pid}/stat").read_bytes())
    except OSError:
        return None


class CallerNotPinned(Exception):
    """The process that connected could not be pinned (it is gone, or /proc cannot be read)."""


class PinnedCaller:
    """The process at the other end of a Unix socket, pinned when the connection was accepted.

    A workload is attested by PID, and a PID is reused once its process is gone: a process
    that connects, hands its connection to another and exits must not be taken for whatever
    runs under its PID next. As SPIRE's peertracker does, the caller is pinned at accept by a
    handle on its ``/proc/<pid>`` directory and its start time, and :meth:`alive` checks
    that the handle still reads, the start time is the same and ``/proc/<pid>`` is owned by
    the uid and gid the kernel recorded at connect. Where the kernel gives one
    (``SO_PEERPIDFD``, Linux 6.5), a pidfd of the very process that called ``connect`` also
    closes the window SPIRE leaves open between connect and accept: a caller already gone when
    the connection is accepted cannot be pinned at all.
    """

    def __init__(self, credentials: PeerCredentials, start_time: int, proc_fd: int, pidfd: int | None) -> None:
        """Hold ``proc_fd`` (and ``pidfd``) until :meth:`close`; use :meth:`pin`."""
        self.credentials = credentials
        self.start_time = start_time
        self._proc_fd: int | None = proc_fd
        self._pidfd = pidfd

    @property
    def pid(self) -> int:
        """The caller's PID (as this agent's PID namespace numbers it)."""
        return self.credentials.pid

    @classmethod
    def pin(cls, sock: socket.socket) -> PinnedCaller:
        """Pin the process connected to ``sock``; raises CallerNotPinned."""
        pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if pid <= 0:
            raise CallerNotPinned("the kernel did not record the connecting process")
        pidfd: int | None
        try:
            pidfd = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
        except OSError:
            pidfd = None  # an older kernel: SPIRE's checks alone
        try:
            proc_fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            _close(pidfd)
            raise CallerNotPinned(f"cannot open /proc/{pid}: {err.strerror}") from None
        caller = cls(PeerCredentials(pid, uid, gid), 0, proc_fd, pidfd)
        start = caller._read_start_time()
        if start is None or not caller._connector_alive():
            caller.close()
            raise CallerNotPinned(f"process {pid} exited before its connection was accepted")
        caller.start_time = start
        return caller

    def _read_start_time(self) -> int | None:
        if self._proc_fd is None:
            return None
        try:
            fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._proc_fd)
        except OSError:
            return None
        try:
            return _start_time(os.read(fd, 4096))
        except OSError:
            return None
        finally:
            os.close(fd)

    def _connector_alive(self) -> bool:
        """Whether the process that called ``connect`` has not been reaped (pidfd), when known."""
        if self._pidfd is None:
            return True
        try:
            signal.pidfd_send_signal(self._pidfd, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists; this agent may not signal it
        return True

    def alive(self) -> bool:
        """Whether the pinned process is still the one behind the PID (SPIRE's ``IsAlive``)."""
        if self._proc_fd is None or not self._connector_alive():
            return False
        try:
            os.listdir(self._proc_fd)  # a handle on an exited process's directory no longer reads
        except OSError:
            return False
        if self._read_start_time() != self.start_time:
            return False
        try:
            info = os.stat(f"/proc/{self.pid}")
        except OSError:
            return False
        return (info.st_uid, info.st_gid) == (self.credentials.uid, self.credentials.gid)

    def close(self) -> None:
        """Let go of the handles (the connection is gone)."""
        _close(self._proc_fd)
        _close(self._pidfd)
        self._proc_fd = self._pidfd = None


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


_PINNED: weakref.WeakKeyDictionary[asyncio.BaseTransport, PinnedCaller] = weakref.WeakKeyDictionary()


def pinned_caller(stream: Any) -> PinnedCaller | None:
    """The process pinned when the stream's connection was accepted (``GrpcServer(pin_callers=True)``)."""
    return _PINNED.get(_transport(stream))


class GrpcServer(grpclib.server.Server):
    """grpclib's server with the limits every pyspire listener has.

    - A request message longer than ``max_receive_message_length`` (gRPC's 4 MiB by default,
      as SPIRE's servers) is refused with RESOURCE_EXHAUSTED as soon as its 5-byte length
      prefix is read: grpclib would otherwise buffer and join it whole, however large, before
      any authentication (HTTP/2 flow control keeps what is unread to one window).
    - With ``pin_callers`` (Unix sockets only) each caller is pinned when its connection is
      accepted (:class:`PinnedCaller`, read back with :func:`pinned_caller`); a connection
      whose caller cannot be pinned is closed at once, as SPIRE's peertracker closes it.
    """

    def __init__(
        self,
        handlers: Collection[Any],
        *,
        max_receive_message_length: int = MAX_RECEIVE_MESSAGE_LENGTH,
        pin_callers: bool = False,
        **kwargs: Any,
    ) -> None:
        """Serve ``handlers``; ``kwargs`` go to grpclib's ``Server``."""
        super().__init__(handlers, **kwargs)
        self._max_receive = max_receive_message_length
        self._pin_callers = pin_callers
        self._tls: ssl.SSLContext | None = None

    async def start_unix(self, path: str, mode: int, **kwargs: Any) -> None:
        """Listen on a Unix socket at ``path`` that has ``mode`` before its first connection.

        ``kwargs`` go to grpclib's ``start``; the backlog is :func:`~pyspire.listening.listen_backlog`'s.
        """
        await self._start_on(unix_listener(path, mode), kwargs)

    async def start_tcp(self, host: str | None, port: int, **kwargs: Any) -> None:
        """Listen on ``host:port`` as Go's ``net.Listen`` would (:func:`~pyspire.listening.tcp_listener`)."""
        await self._start_on(tcp_listener(host, port), kwargs)

    async def _start_on(self, sock: ListeningSocket, kwargs: dict[str, Any]) -> None:
        # TLS is layered on in _protocol_factory, with a smaller buffer than asyncio's own.
        self._tls = kwargs.pop("ssl", None)
        try:
            await self.start(sock=sock, **{"backlog": listen_backlog(), **kwargs})
        except BaseException:
            sock.close()
            raise

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        _limit_received_messages(protocol.handler, self._max_receive)
        if self._pin_callers:
            _pin_on_accept(protocol)
        if self._tls is not None:
            # No waiter: asyncio accepts a None one (nothing awaits the handshake; a failed one
            # closes the connection, as on asyncio's own path); typeshed asks for a Future.
            loop = asyncio.get_running_loop()
            return LeanTlsProtocol(loop, protocol, self._tls, None, server_side=True)  # type: ignore[arg-type]
        return protocol


class LeanTlsProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS layer with a read buffer of one TLS record instead of 256 KiB.

    asyncio gives every TLS connection a zero-filled 256 KiB buffer when it is accepted, used
    only by buffered protocols (grpclib's is not), and passes the same size to each decrypting
    read. An agent keeps its connection to the server open, so ten thousand agents held
    2.5 GiB of server memory in these buffers alone (bench/vs_spire.py, 10,000 agents: 3.5 GiB
    against SPIRE's 0.6). One record's plaintext is at most 16 KiB, so each decrypting read
    still takes a whole record; only a large message arriving at once takes more socket reads.
    """

    max_size = 16 * 1024


def _limit_received_messages(handler: Any, limit: int) -> None:
    # grpclib reads a message as recv_data(5) for its prefix, then recv_data(length): the
    # length is checked before a byte of the message is read.
    accept = handler.accept

    def limited_accept(stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        receive = stream.recv_data

        async def recv_data(size: int) -> bytes:
            if size > limit:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {limit})"
                )
            return await receive(size)  # type: ignore[no-any-return]

        stream.recv_data = recv_data
        accept(stream, headers, release_stream)

    handler.accept = limited_accept


def _pin_on_accept(protocol: Any) -> None:
    made, lost = protocol.connection_made, protocol.connection_lost
    pinned: list[tuple[asyncio.BaseTransport, PinnedCaller]] = []

    def connection_made(transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        try:
            if sock is None or sock.family != socket.AF_UNIX:
                raise CallerNotPinned("not a Unix-socket connection")
            caller = PinnedCaller.pin(sock)
        except (CallerNotPinned, OSError) as err:
            _log.warning("Connection failed during accept", extra={"error": str(err)})
            transport.close()
            return
        _PINNED[transport] = caller
        pinned.append((transport, caller))
        made(transport)

    def connection_lost(exc: BaseException | None) -> None:
        if not pinned:
            return  # refused at accept: grpclib never saw the connection
        transport, caller = pinned.pop()
        _PINNED.pop(transport, None)
        caller.close()
        lost(exc)

    protocol.connection_made = connection_made
    protocol.connection_lost = connection_lost


def _trust(context: ssl.SSLContext, roots: Sequence[x509.Certificate]) -> None:
    if roots:
        context.load_verify_locations(
            cadata=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots).decode()
        )


class ServerTlsContexts:
    """TLS for a server endpoint whose certificate rotates: every handshake gets the newest one.

    The defaults suit the server's gRPC endpoint (HTTP/2, client SVIDs optional and verified
    against the bundle); the bundle endpoint uses HTTP/1.1 without client certificates.
    """

    def __init__(self, *, alpn: Sequence[str] = ("h2",), client_certificates: bool = True) -> None:
        """Empty until :meth:`update` is called with the first certificate."""
        self._alpn = list(alpn)
        self._verify_mode = ssl.CERT_OPTIONAL if client_certificates else ssl.CERT_NONE
        self._current: ssl.SSLContext | None = None
        self._listener: ssl.SSLContext | None = None

    def _context(
        self, chain: Sequence[x509.Certificate], private_key: PrivateKeyTypes, trusted: Sequence[x509.Certificate]
    ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = self._verify_mode
        # No session tickets (SPIRE: SessionTicketsDisabled): OP_NO_TICKET stops TLS 1.2's
        # stateless tickets, but TLS 1.3 would then send stateful ones; only num_tickets = 0
        # stops those. A resumed session would skip verification against the current bundle.
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
        context.set_alpn_protocols(self._alpn)
        load_identity(context, chain, private_key)
        _trust(context, trusted)
        return context

    def update(
        self,
        chain: Sequence[x509.Certificate],
        private_key: PrivateKeyTypes,
        trusted: Sequence[x509.Certificate] = (),
    ) -> None:
        """Use this certificate chain and these trusted roots for every handshake from now on."""
        self._current = self._context(chain, private_key, trusted)
        if self._listener is None:
            listener = self._context(chain, private_key, trusted)
            listener.sni_callback = self._select
            self._listener = listener

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        # Called for every ClientHello, with or without SNI: hand the connection the newest
        # context (its certificate and its trust store; the verify mode is the same).
        if self._current is not None:
            ssl_object.context = self._current

    @property
    def listener(self) -> ssl.SSLContext:
        """The context to listen with (it delegates every handshake to the newest one)."""
        if self._listener is None:
            raise RuntimeError("no certificate yet: call update() first")
        return self._listener


def client_tls_context(
    trusted: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate] = (),
    private_key: PrivateKeyTypes | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server's chain against ``trusted`` (not its name).

    With ``chain``/``private_key`` the client presents that SVID. Host names are not
    checked: :class:`SpiffeChannel` checks the server's SPIFFE ID instead.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    _trust(context, trusted)
    if chain and private_key is not None:
        load_identity(context, chain, private_key)
    return context


class ServerIdentityError(ConnectionError):
    """The server's certificate does not carry the SPIFFE ID the client expects."""


def keep_completed_responses(protocol: Any) -> None:
    """Make a grpclib client connection take RST_STREAM(NO_ERROR) after a complete response as the end.

    A grpc-go server (SPIRE's) that has sent a stream's trailers while the client has not yet
    closed its side resets the stream with NO_ERROR, as HTTP/2 lets it: "stop sending, the
    answer is complete". grpclib takes any reset as a failure and throws away what it had
    received, so a bidirectional call (AttestAgent, SyncAuthorizedEntries) lost its last
    message; the agent then retried attestation with a spent join token. Such a reset now
    closes the stream as if the client had ended its side (its ``end()`` has nothing left to
    send); any other reset still fails the call. Call once the connection is made (grpclib
    builds its events processor in ``connection_made``).
    """
    processor = protocol.processor
    terminate = processor.processors[StreamReset]

    async def already_ended() -> None:
        return None

    def process_stream_reset(event: StreamReset) -> None:
        stream = processor.streams.get(event.stream_id)
        completed = stream is not None and stream.trailers is not None
        if event.remote_reset and event.error_code == ErrorCodes.NO_ERROR and completed:
            stream.end = already_ended
            return
        terminate(event)

    processor.processors[StreamReset] = process_stream_reset


class SpiffeChannel(grpclib.client.Channel):
    """A grpclib channel over TLS that accepts only a server with the expected SPIFFE ID.

    The check runs in the connection's first callback, right after the TLS handshake: a
    server presenting another ID (or none) is disconnected before any request is written.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        server_id: Callable[[SpiffeId | None], None],
        **kwargs: Any,
    ) -> None:
        """Connect to ``host:port``; ``server_id`` is a matcher (``pyspire.spiffe.match_id``)."""
        super().__init__(host, port, ssl=ssl_context, **kwargs)
        self._server_id = server_id
        self._identity_error: Exception | None = None

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        original = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            try:
                self._check(transport)
            except Exception as err:
                self._identity_error = err
                # The HTTP/2 protocol never started, so it has nothing to tear down when the
                # transport reports the loss (grpclib's own handler would fail on it).
                protocol.connection_lost = _never_started  # type: ignore[method-assign,assignment]
                transport.close()
                return
            original(transport)
            keep_completed_responses(protocol)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    def _check(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise ServerIdentityError("the server presented no certificate")
        try:
            spiffe_id: SpiffeId | None = leaf_spiffe_id(der_certificate(der))
        except ValueError:  # X509SvidError included
            spiffe_id = None
        try:
            self._server_id(spiffe_id)
        except MatchError as err:
            raise ServerIdentityError(f"unexpected server identity: {err}") from None

    async def _create_connection(self) -> Any:
        self._identity_error = None
        protocol = await super()._create_connection()
        if self._identity_error is not None:
            raise self._identity_error
        return protocol


def _never_started(_exc: BaseException | None) -> None:
    """``connection_lost`` of a connection refused before its protocol started."""


def unix_socket_in_use(path: Path) -> bool:
    """Whether a live process accepts connections on ``path`` (a stale socket file is not)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
