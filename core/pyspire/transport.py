"""Sockets and TLS: who is calling, and TLS contexts that follow SVID and bundle rotation.

Everything that depends on grpclib's or OpenSSL's internals lives here and nowhere else:

- the caller of a gRPC stream: its Unix-socket credentials (``SO_PEERCRED``), its TCP
  address, its TLS certificate;
- the identity of a local process over time (so PID reuse cannot take over an identity);
- :class:`ServerTlsContexts`: the server side, presenting the current SVID and verifying
  optional client certificates against the current bundle. A new context is built on every
  change and swapped in per handshake, so rotation needs no restart; session tickets are
  off, so a resumed session can never skip verification against the current bundle;
- :class:`SpiffeChannel`: the client side, a grpclib channel that checks the server's SPIFFE
  ID right after the TLS handshake, before any request is sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpclib.client
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.spiffe import MatchError, SpiffeId, X509SvidError
from pyspire.spiffe.x509svid import leaf_spiffe_id

__all__ = [
    "PeerCredentials",
    "ProcessIdentity",
    "ServerTlsContexts",
    "SpiffeChannel",
    "client_tls_context",
    "peer_address",
    "peer_certificate",
    "peer_credentials",
    "unix_socket_in_use",
]

_PEERCRED = struct.Struct("3i")


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


def peer_certificate(stream: Any) -> x509.Certificate | None:
    """The certificate the caller presented in TLS (already verified by OpenSSL), or None."""
    ssl_object = _transport(stream).get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


@dataclass(frozen=True)
class ProcessIdentity:
    """A process pinned by its start time: a later process reusing the PID is not it."""

    pid: int
    uid: int
    gid: int
    start_time: int

    @classmethod
    def of(cls, credentials: PeerCredentials) -> ProcessIdentity | None:
        """The identity of the process behind ``credentials``, or None if it is gone."""
        start = process_start_time(credentials.pid)
        return None if start is None else cls(credentials.pid, credentials.uid, credentials.gid, start)

    def still_running(self) -> bool:
        """Whether the same process (same PID, start time and owner) still exists."""
        if process_start_time(self.pid) != self.start_time:
            return False
        try:
            info = os.stat(f"/proc/{self.pid}")
        except OSError:
            return False
        return info.st_uid == self.uid


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def _load_identity(context: ssl.SSLContext, chain: Sequence[x509.Certificate], private_key: PrivateKeyTypes) -> None:
    """Give ``context`` a certificate chain and key without writing the key to any disk.

    Python's ssl loads keys only from a path: an anonymous memory file (memfd) serves as
    one, and is gone when closed.
    """
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    pem += private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.memfd_create("pyspire-tls-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


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
        context.options |= ssl.OP_NO_TICKET
        context.set_alpn_protocols(self._alpn)
        _load_identity(context, chain, private_key)
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
        _load_identity(context, chain, private_key)
    return context


class ServerIdentityError(ConnectionError):
    """The server's certificate does not carry the SPIFFE ID the client expects."""


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

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    def _check(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise ServerIdentityError("the server presented no certificate")
        try:
            spiffe_id: SpiffeId | None = leaf_spiffe_id(x509.load_der_x509_certificate(der))
        except X509SvidError:
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
