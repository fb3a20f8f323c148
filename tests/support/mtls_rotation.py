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

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from pyspire.spiffe import Backoff, JwtSource, SpiffeId, TrustDomain, WorkloadApiError, X509Source, tls

from tests.support.identities import CLIENT, INTRUDER, SERVER, Deployment, pick
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process
from tests.support.x509_material import HandSetSource

LEGACY = "spiffe://example.org/legacy"
EXAMPLE = TrustDomain.parse("example.org")


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
        # Closing a listening socket does not wake a thread blocked in accept(); shutting it
        # down does (the thread then sees OSError and returns). Without it each close waited
        # out the join's 10 s.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the echo server's thread did not end"


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


def _authorities(source: X509Source) -> list[str]:
    bundle = source.get_bundle_for_trust_domain(EXAMPLE)
    assert bundle is not None
    return sorted(
        a.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
        for a in bundle.x509_authorities
    )


def run_through_everything_that_rotates(deployment: Deployment) -> None:
    """The whole scenario, on a deployment whose three entries were made with ``-x509SVIDTTL 16``.

    16 s SVIDs (backdated 10 s, renewed at half their life): a new one every 3 to 4 seconds.
    """
    # An identity whose SVID lives an hour: kept from before the CA rotation, it shows the
    # old authority's end.
    register_this_process(deployment.server, deployment.alias, LEGACY, "-hint", "legacy")
    # Reconnecting within a second or two (go-spiffe's backoff reaches 4 s): the agent's
    # restart must fit in what is left of the last 16 s SVIDs on a loaded machine too.
    backoff = Backoff(initial=0.5, maximum=2)
    with (
        deployment.source("server", backoff) as server_source,
        deployment.source("client", backoff) as client_source,
        deployment.source("intruder", backoff) as intruder_source,
        X509Source(deployment.agent.address, timeout=30, picker=pick("legacy"), backoff=backoff) as legacy_source,
        JwtSource(deployment.agent.address, backoff=backoff) as jwt_source,
    ):
        pair = start_pair(server_source, client_source)
        legacy_server = EchoServer(tls.server_context(server_source, tls.authorize_id(LEGACY)))
        try:
            # 1. Five SVID rotations on each side, every handshake on the newest SVIDs.
            rotate_svids(pair, 5, timeout=120)

            # 2. The agent restarts mid-run: the last good material serves meanwhile.
            generations = server_source.generation, client_source.generation
            token = jwt_source.fetch_svid("billing", spiffe_id=SERVER).token
            assert deployment.agent.stop() == 0
            for _ in range(3):
                pair.exchange()
                time.sleep(0.2)
            assert str(jwt_source.validate(token, "billing").spiffe_id) == SERVER  # the kept JWT bundles
            with pytest.raises((WorkloadApiError, OSError)):
                jwt_source.fetch_svid("billing", spiffe_id=SERVER)
            deployment.agent.start()
            rotate_svids(pair, 2, timeout=90)
            assert server_source.generation > generations[0]
            assert client_source.generation > generations[1]
            assert str(eventually(lambda: jwt_source.fetch_svid("billing", spiffe_id=SERVER)).spiffe_id) == SERVER

            # 3. The CA rotates: prepare, activate, taint, revoke.
            old_ca = deployment.server.x509_authority_id()
            new_ca = deployment.server.x509_authority_id("prepare", "Prepared")
            pair.exchange_until(
                lambda: len(_authorities(server_source)) == len(_authorities(legacy_source)) == 2,
                60,
                "the prepared CA published",
            )
            legacy = frozen_copy(legacy_source)  # the old CA's SVID, both CAs trusted
            assert issuer_key_id(legacy.svid.leaf) == old_ca.lower()
            legacy_client = tls.client_context(legacy, tls.authorize_id(SERVER))
            deployment.server.cli("localauthority", "x509", "activate", "-authorityID", new_ca)
            deployment.server.cli("localauthority", "x509", "taint", "-authorityID", old_ca)
            pair.exchange_until(
                lambda: {issuer_key_id(s.svid.leaf) for s in (server_source, client_source)} == {new_ca.lower()},
                90,
                "SVIDs of the new CA on both sides",
            )
            pair.exchange()
            connect(legacy_client, legacy_server.address)  # still trusted: its CA is still in the bundle
            deployment.server.cli("localauthority", "x509", "revoke", "-authorityID", old_ca)
            pair.exchange_until(
                lambda: _authorities(server_source) == [new_ca.lower()], 60, "the old CA out of the bundle"
            )
            refusals_before = len(legacy_server.refusals)
            with pytest.raises((ssl.SSLError, OSError)):
                connect(legacy_client, legacy_server.address)
            deadline = time.monotonic() + 10
            while len(legacy_server.refusals) == refusals_before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert isinstance(legacy_server.refusals[-1], ssl.SSLCertVerificationError)
            pair.exchange()

            # 4. A peer with the wrong SPIFFE ID, refused by each authorizer.
            refusals = refused_by_each_authorizer(pair, intruder_source)
            assert sorted(refusals) == ["authorize_id", "authorize_member_of", "authorize_one_of"]
            for name, error in refusals.items():
                assert expected_refusal(name, error), f"{name}: {error!r}"

            assert pair.server.refusals == []
            server_count, client_count = pair.observed.distinct()
            assert server_count >= 8
            assert client_count >= 8
        finally:
            legacy_server.close()
            pair.server.close()
