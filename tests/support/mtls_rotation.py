"""Two workloads talking mutual TLS through everything that rotates, with pyspire.spiffe.tls contexts.

The scenario is written once and run against each agent implementation (pyspire-agent, and
SPIRE's spire-agent where it is built): a server context and a client context over X509Sources,
connections made again and again while

- SVIDs rotate (short TTLs): every handshake must present the SVID its source holds at that
  moment, never an older one;
- the agent restarts: handshakes go on with the last good material while it is away, and
  rotations reach the contexts again once it is back;
- the CA rotates (prepare, activate, taint, revoke): SVIDs of the new authority are trusted as
  soon as it is published, and an SVID of the old one is refused once it is revoked;

and peers with the wrong SPIFFE ID are refused by each authorizer.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from pyspire.spiffe import SpiffeId, X509Source, tls

from tests.support.identities import CLIENT, INTRUDER, SERVER
from tests.support.x509_material import HandSetSource


def issuer_key_id(certificate: x509.Certificate) -> str:
    """The authority key identifier of ``certificate`` (hex): which CA signed it."""
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    return aki.key_identifier.hex()


class EchoServer:
    """A blocking TLS server on a thread: answers each connection with the serial of the client's leaf."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.refusals: list[BaseException] = []
        self._listener = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.address = self._listener.getsockname()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()  # the handshake, and the SPIFFE check, happen here
            except ssl.SSLError as err:
                self.refusals.append(err)
                continue
            except OSError:
                return  # closed
            with connection:
                try:
                    connection.settimeout(10)
                    connection.recv(100)
                    leaf = x509.load_der_x509_certificate(connection.getpeercert(binary_form=True) or b"")
                    connection.sendall(f"{leaf.serial_number}\n".encode())
                except (OSError, ValueError) as err:
                    self.refusals.append(err)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(10)


@dataclass(frozen=True)
class Handshake:
    """What one connection showed: the server's leaf, as the client saw it, and the client's serial, as the server did."""

    server_leaf: x509.Certificate
    client_serial: int


def connect(context: ssl.SSLContext, address: tuple[str, int]) -> Handshake:
    """One connection and one exchange; raises whatever the handshake or the exchange raised."""
    with (
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        connection.sendall(b"serial?\n")
        answer = connection.recv(100)
        if not answer:
            raise ConnectionError("the server closed the connection without answering")
        der = connection.getpeercert(binary_form=True)
        assert der is not None
        return Handshake(x509.load_der_x509_certificate(der), int(answer))


@dataclass
class Observed:
    """Serials each side presented, in the order the other side saw them."""

    server_serials: list[int] = field(default_factory=list)
    client_serials: list[int] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    def distinct(self) -> tuple[int, int]:
        return len(set(self.server_serials)), len(set(self.client_serials))


@dataclass
class Pair:
    """The two workloads: their sources, contexts and the running server."""

    server_source: X509Source
    client_source: X509Source
    server: EchoServer
    client: ssl.SSLContext
    observed: Observed = field(default_factory=Observed)

    def exchange(self) -> Handshake:
        """One connection, checking that both ends presented what their sources hold right now."""
        server_before = self.server_source.svid.leaf.serial_number
        client_before = self.client_source.svid.leaf.serial_number
        seen = connect(self.client, self.server.address)
        server_after = self.server_source.svid.leaf.serial_number
        client_after = self.client_source.svid.leaf.serial_number
        # A rotation may land during the handshake: then either SVID is the newest.
        assert seen.server_leaf.serial_number in {server_before, server_after}, "the server presented an old SVID"
        assert seen.client_serial in {client_before, client_after}, "the client presented an old SVID"
        self.observed.server_serials.append(seen.server_leaf.serial_number)
        self.observed.client_serials.append(seen.client_serial)
        return seen

    def exchange_until(self, done: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
        """Connections every ``interval`` s until ``done()``; each one must succeed."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s ({self.observed.distinct()} serials)"
            self.exchange()
            time.sleep(interval)


def start_pair(server_source: X509Source, client_source: X509Source) -> Pair:
    """The server authorizes only /client, the client only /server."""
    server = EchoServer(tls.server_context(server_source, tls.authorize_id(CLIENT)))
    return Pair(server_source, client_source, server, tls.client_context(client_source, tls.authorize_id(SERVER)))


def rotate_svids(pair: Pair, rotations: int, timeout: float) -> None:
    """Exchange until each side has presented ``rotations`` SVIDs after its first."""
    start_server, start_client = pair.observed.distinct()
    pair.exchange_until(
        lambda: (
            min(a - b for a, b in zip(pair.observed.distinct(), (start_server, start_client), strict=True)) >= rotations
        ),
        timeout,
        f"{rotations} SVID rotations on each side",
    )


def refused_by_each_authorizer(pair: Pair, intruder_source: X509Source) -> dict[str, BaseException]:
    """A connection per authorizer from a peer it must refuse; the server-side refusal of each."""
    intruder = tls.client_context(intruder_source, tls.authorize_id(SERVER))
    honest = tls.client_context(pair.client_source, tls.authorize_id(SERVER))
    cases = {
        "authorize_id": (tls.authorize_id(CLIENT), intruder),
        "authorize_one_of": (tls.authorize_one_of(CLIENT, "spiffe://example.org/billing"), intruder),
        "authorize_member_of": (tls.authorize_member_of("other.org"), honest),
    }
    refusals: dict[str, BaseException] = {}
    for name, (authorize, client) in cases.items():
        server = EchoServer(tls.server_context(pair.server_source, authorize))
        try:
            try:
                connect(client, server.address)
            except (OSError, ssl.SSLError):
                pass
            else:
                raise AssertionError(f"{name} let the peer in")
            deadline = time.monotonic() + 10
            while not server.refusals and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.refusals, f"{name}: the server recorded no refusal"
            refusals[name] = server.refusals[0]
        finally:
            server.close()
    return refusals


def frozen_copy(source: X509Source) -> HandSetSource:
    """The source's SVID and bundles as they are now, never to change (an old workload's view)."""
    return HandSetSource(source.svid, source.bundles)


def expected_refusal(name: str, error: BaseException) -> bool:
    """Whether ``error`` is the refusal ``name`` must give."""
    intruder, client = SpiffeId.parse(INTRUDER), SpiffeId.parse(CLIENT)
    return isinstance(error, tls.PeerRefusedError) and error.spiffe_id == (
        client if name == "authorize_member_of" else intruder
    )
