"""pyspire.spiffe.tls contexts with hand-set material: verification, authorization, rotation, the ssl API.

Real TLS between two threads over loopback; the material comes from a source the test changes
by hand (tests/support/x509_material.py), so each rule is shown without waiting for an agent.
py-spiffe's spiffe-tls scenarios (listen/dial, the stdlib context with urllib, the authorizers'
SAN cases, the context's settable properties) are here, rewritten for this API.
"""

from __future__ import annotations

import http.client
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyspire.spiffe import SpiffeId, SpiffeIdError, X509Svid, tls

from tests.support.pki import Issued, make_ca, make_leaf, write_pem
from tests.support.x509_material import HandSetSource, bundles_of, svid_of

SERVER = "spiffe://example.org/server"
CLIENT = "spiffe://example.org/client"


@dataclass
class Outcome:
    """What each side of one connection saw."""

    client_peer: SpiffeId | None = None
    server_peer: SpiffeId | None = None
    client_error: BaseException | None = None
    server_error: BaseException | None = None
    server_received: bytes | None = None
    echoed: bytes | None = None
    client_peer_serial: int | None = None
    alpn: str | None = None
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def exchange(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    *,
    handshake_on_connect: bool = True,
    message: bytes = b"ping",
) -> Outcome:
    """One connection: the client sends ``message``, the server echoes it; errors are recorded, not raised."""
    outcome = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            with server_context.wrap_socket(raw, server_side=True) as connection:
                outcome.server_peer = tls.peer_spiffe_id(connection)
                data = connection.recv(100)
                outcome.server_received = data
                if data:
                    connection.sendall(data)
        except Exception as err:
            outcome.server_error = err

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_context.wrap_socket(
                raw, server_hostname="localhost", do_handshake_on_connect=handshake_on_connect
            ) as connection,
        ):
            connection.sendall(message)
            outcome.client_peer = tls.peer_spiffe_id(connection)
            peer = connection.getpeercert(binary_form=True)
            outcome.client_peer_serial = x509.load_der_x509_certificate(peer).serial_number if peer else None
            outcome.alpn = connection.selected_alpn_protocol()
            outcome.version = connection.version()
            outcome.echoed = connection.recv(100)
    except Exception as err:
        outcome.client_error = err
    finally:
        thread.join(10)
        listener.close()
    return outcome


def leaf_with_sans(issuer: Issued, names: Sequence[x509.GeneralName]) -> X509Svid:
    """A leaf with exactly ``names`` as SANs, which X509Svid.from_parts would refuse: built raw."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC) - timedelta(minutes=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),  # digitalSignature
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    certificate = builder.sign(issuer.key, hashes.SHA256())
    # X509Svid's own constructor takes parts as they are: this is a peer that breaks the rules.
    return X509Svid(SpiffeId.parse("spiffe://example.org/whatever"), [certificate], key)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("example.org", name="example.org CA")


@pytest.fixture(scope="module")
def other_ca() -> Issued:
    return make_ca("other.org", name="other.org CA")


@pytest.fixture
def server_source(ca: Issued) -> HandSetSource:
    return HandSetSource(svid_of(ca, SERVER), bundles_of(example_org=[ca.certificate]))


@pytest.fixture
def client_source(ca: Issued) -> HandSetSource:
    return HandSetSource(svid_of(ca, CLIENT), bundles_of(example_org=[ca.certificate]))


def client_as(svid: X509Svid, roots: Sequence[x509.Certificate]) -> tls.SpiffeClientContext:
    """A client presenting ``svid`` and trusting ``roots`` for example.org, accepting any server ID."""
    return tls.client_context(HandSetSource(svid, bundles_of(example_org=roots)), tls.authorize_any())


# -- py-spiffe's listen/dial scenarios -------------------------------------------------------


def test_mutual_tls_connects_when_each_side_authorizes_the_other(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    outcome = exchange(
        tls.server_context(server_source, tls.authorize_id(CLIENT)),
        tls.client_context(client_source, tls.authorize_id(SERVER)),
    )
    assert outcome.client_error is None
    assert outcome.server_error is None
    assert outcome.echoed == b"ping"
    assert str(outcome.client_peer) == SERVER
    assert str(outcome.server_peer) == CLIENT


def test_server_only_tls_connects_when_the_client_authorizes_the_server(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    outcome = exchange(
        tls.tls_server_context(server_source), tls.tls_client_context(client_source, tls.authorize_id(SERVER))
    )
    assert outcome.echoed == b"ping"
    assert str(outcome.client_peer) == SERVER
    assert outcome.server_peer is None  # the client proved nothing, and was not asked to


def test_server_refuses_a_client_it_does_not_authorize(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    outcome = exchange(
        tls.server_context(server_source, tls.authorize_id("spiffe://example.org/other")),
        tls.client_context(client_source, tls.authorize_any()),
    )
    assert isinstance(outcome.server_error, tls.PeerRefusedError)
    assert str(outcome.server_error) == (
        'certificate verify failed: spiffe://example.org/client is not authorized: unexpected ID "spiffe://example.org/client"'
    )
    assert str(outcome.server_error.spiffe_id) == CLIENT
    assert outcome.server_received is None
    assert not outcome.echoed  # TLS 1.3: the client's handshake ended first; then the server hung up


def test_client_refuses_a_server_it_does_not_authorize(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    outcome = exchange(
        tls.server_context(server_source, tls.authorize_any()),
        tls.client_context(client_source, tls.authorize_id("spiffe://example.org/other")),
    )
    assert isinstance(outcome.client_error, tls.PeerRefusedError)
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "certificate verify failed: spiffe://example.org/server is not authorized" in str(outcome.client_error)
    assert not outcome.server_received  # nothing was sent to a server the client refused


# -- py-spiffe's stdlib-context scenarios: urllib over mutual TLS ---------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"Hello from SPIFFE server"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(server_source: HandSetSource) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = tls.server_context(server_source, tls.authorize_id(CLIENT)).wrap_socket(
        server.socket, server_side=True
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_urllib_gets_a_page_over_mutual_tls(https_server: str, client_source: HandSetSource) -> None:
    context = tls.client_context(client_source, tls.authorize_id(SERVER))
    assert isinstance(context, ssl.SSLContext)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    with opener.open(https_server, timeout=10) as response:
        assert response.status == 200
        assert response.read() == b"Hello from SPIFFE server"


def test_urllib_client_the_server_does_not_authorize_gets_no_page(https_server: str, ca: Issued) -> None:
    intruder = HandSetSource(svid_of(ca, "spiffe://example.org/intruder"), bundles_of(example_org=[ca.certificate]))
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=tls.client_context(intruder, tls.authorize_id(SERVER)))
    )
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
        opener.open(https_server, timeout=10).read()


# -- what verifies: py-spiffe's SAN cases, and the SPIFFE rules ------------------------------


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ([x509.DNSName("service.example.org")], "certificate contains no URI SAN"),
        (
            [
                x509.UniformResourceIdentifier("spiffe://example.org/service"),
                x509.UniformResourceIdentifier("https://example.org/service"),
            ],
            "certificate contains more than one URI SAN",
        ),
        ([x509.UniformResourceIdentifier("https://example.org/service")], "invalid SPIFFE ID in URI SAN"),
        ([], "certificate contains no URI SAN"),
    ],
    ids=["dns-only", "two-uri-sans", "not-spiffe", "no-san"],
)
@pytest.mark.parametrize(
    "authorize",
    [tls.authorize_any(), tls.authorize_id("spiffe://example.org/service"), tls.authorize_member_of("example.org")],
    ids=["any", "id", "member-of"],
)
def test_a_peer_whose_leaf_is_not_an_svid_is_refused_by_every_authorizer(
    server_source: HandSetSource, ca: Issued, names: list[x509.GeneralName], reason: str, authorize: tls.Authorizer
) -> None:
    outcome = exchange(
        tls.server_context(server_source, authorize), client_as(leaf_with_sans(ca, names), [ca.certificate])
    )
    assert isinstance(outcome.server_error, tls.PeerRefusedError)
    assert reason in str(outcome.server_error)
    assert outcome.server_error.spiffe_id is None


def test_a_dns_san_beside_the_spiffe_id_is_fine_and_authorizers_see_the_parsed_id(
    server_source: HandSetSource, ca: Issued
) -> None:
    peer = leaf_with_sans(
        ca, [x509.UniformResourceIdentifier("spiffe://example.org/service"), x509.DNSName("service.example.org")]
    )
    for authorize in (
        tls.authorize_any(),
        tls.authorize_id("spiffe://example.org/service"),
        tls.authorize_one_of(SERVER, SpiffeId.parse("spiffe://example.org/service")),
        tls.authorize_member_of("example.org"),
    ):
        outcome = exchange(tls.server_context(server_source, authorize), client_as(peer, [ca.certificate]))
        assert outcome.server_error is None
        assert str(outcome.server_peer) == "spiffe://example.org/service"


@pytest.mark.parametrize(
    ("authorize", "message"),
    [
        (tls.authorize_id("spiffe://example.org/billing"), 'unexpected ID "spiffe://example.org/client"'),
        (tls.authorize_one_of(SERVER, "spiffe://example.org/billing"), 'unexpected ID "spiffe://example.org/client"'),
        (tls.authorize_one_of(), 'unexpected ID "spiffe://example.org/client"'),
        (tls.authorize_member_of("other.org"), 'unexpected trust domain "example.org"'),
    ],
    ids=["id", "one-of", "one-of-nobody", "member-of"],
)
def test_each_authorizer_refuses_an_id_outside_it(
    server_source: HandSetSource, client_source: HandSetSource, authorize: tls.Authorizer, message: str
) -> None:
    outcome = exchange(
        tls.server_context(server_source, authorize), tls.client_context(client_source, tls.authorize_any())
    )
    assert isinstance(outcome.server_error, tls.PeerRefusedError)
    assert message in str(outcome.server_error)


def test_authorize_any_still_refuses_a_peer_from_an_untrusted_authority(
    server_source: HandSetSource, ca: Issued, other_ca: Issued
) -> None:
    stranger = svid_of(other_ca, CLIENT)
    outcome = exchange(tls.server_context(server_source, tls.authorize_any()), client_as(stranger, [ca.certificate]))
    # OpenSSL itself refuses first: the other CA is in no bundle the server holds.
    assert isinstance(outcome.server_error, ssl.SSLCertVerificationError)
    assert outcome.server_peer is None


def test_another_trust_domains_authority_never_vouches_for_this_one(
    ca: Issued, other_ca: Issued, client_source: HandSetSource
) -> None:
    # The server trusts both trust domains (a federation); other.org's CA signs an example.org
    # ID. OpenSSL's store has both roots and accepts the chain; the SPIFFE rule does not.
    both = bundles_of(example_org=[ca.certificate], other_org=[other_ca.certificate])
    server = HandSetSource(svid_of(ca, SERVER), both)
    forged = svid_of(other_ca, "spiffe://example.org/admin")
    outcome = exchange(tls.server_context(server, tls.authorize_any()), client_as(forged, [ca.certificate]))
    assert isinstance(outcome.server_error, tls.PeerRefusedError)
    assert 'no chain to an authority of trust domain "example.org"' in str(outcome.server_error)

    federated = svid_of(other_ca, "spiffe://other.org/partner")
    outcome = exchange(
        tls.server_context(server, tls.authorize_member_of("other.org")), client_as(federated, [ca.certificate])
    )
    assert outcome.server_error is None
    assert str(outcome.server_peer) == "spiffe://other.org/partner"


def test_a_chain_through_an_intermediate_verifies_and_the_authorizer_gets_it(
    server_source: HandSetSource, ca: Issued
) -> None:
    intermediate = make_ca("example.org", issuer=ca, name="intermediate")
    seen: list[tuple[SpiffeId, Sequence[x509.Certificate]]] = []

    def record(spiffe_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        seen.append((spiffe_id, chain))

    peer = svid_of(intermediate, CLIENT, intermediates=[intermediate])
    outcome = exchange(tls.server_context(server_source, record), client_as(peer, [ca.certificate]))
    assert outcome.server_error is None
    [(spiffe_id, chain)] = seen
    assert str(spiffe_id) == CLIENT
    assert [c.subject for c in chain] == [peer.leaf.subject, intermediate.certificate.subject, ca.certificate.subject]


def test_an_authorizer_that_raises_refuses_the_peer(server_source: HandSetSource, client_source: HandSetSource) -> None:
    def broken(spiffe_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        raise KeyError("policy table")

    outcome = exchange(
        tls.server_context(server_source, broken), tls.client_context(client_source, tls.authorize_any())
    )
    assert isinstance(outcome.server_error, tls.PeerRefusedError)
    assert "the authorizer raised KeyError" in str(outcome.server_error)


def test_data_written_before_an_explicit_handshake_waits_for_the_check(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    # do_handshake_on_connect=False: the first send would make OpenSSL shake hands on its own.
    outcome = exchange(
        tls.server_context(server_source, tls.authorize_any()),
        tls.client_context(client_source, tls.authorize_id("spiffe://example.org/other")),
        handshake_on_connect=False,
    )
    assert isinstance(outcome.client_error, tls.PeerRefusedError)
    assert not outcome.server_received


# -- rotation: the next handshake uses the newest material -----------------------------------


def test_the_next_handshake_presents_the_rotated_svid(
    ca: Issued, server_source: HandSetSource, client_source: HandSetSource
) -> None:
    server = tls.server_context(server_source, tls.authorize_id(CLIENT))
    client = tls.client_context(client_source, tls.authorize_id(SERVER))
    before = exchange(server, client)
    rotated = svid_of(ca, SERVER)
    server_source.update(svid=rotated)
    after = exchange(server, client)
    assert before.client_peer_serial != after.client_peer_serial
    assert after.client_peer_serial == rotated.leaf.serial_number
    assert after.echoed == b"ping"


def test_an_authority_removed_from_the_bundle_stops_being_trusted(
    ca: Issued, server_source: HandSetSource, client_source: HandSetSource
) -> None:
    new_ca = make_ca("example.org", name="next CA")
    server = tls.server_context(server_source, tls.authorize_any())
    old_client = tls.client_context(client_source, tls.authorize_any())
    # The new authority is published beside the old one: both kinds of SVID verify.
    server_source.update(bundles=bundles_of(example_org=[ca.certificate, new_ca.certificate]))
    assert exchange(server, old_client).server_error is None
    new_client = client_as(svid_of(new_ca, CLIENT), [ca.certificate, new_ca.certificate])
    assert exchange(server, new_client).server_error is None
    # The old one is revoked: an SVID it signed is refused from the next handshake on.
    server_source.update(svid=svid_of(new_ca, SERVER), bundles=bundles_of(example_org=[new_ca.certificate]))
    refused = exchange(server, old_client)
    assert isinstance(refused.server_error, ssl.SSLError)
    assert refused.server_peer is None
    assert exchange(server, new_client).server_error is None


def test_a_closed_source_fails_new_handshakes_and_new_contexts(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    server = tls.server_context(server_source, tls.authorize_any())
    client = tls.client_context(client_source, tls.authorize_any())
    server_source.closed = True
    server_source.update()
    outcome = exchange(server, client)
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert "no SPIFFE material for this handshake: the test closed this source" in str(outcome.server_error)
    with pytest.raises(RuntimeError, match="the test closed this source"):
        tls.server_context(server_source, tls.authorize_any())


# -- the ssl API: py-spiffe's context properties, and what is refused ------------------------


def test_contexts_are_standard_ssl_contexts_with_spiffe_defaults(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    server = tls.server_context(server_source, tls.authorize_any())
    client = tls.client_context(client_source, tls.authorize_any())
    for context in (server, client):
        assert isinstance(context, ssl.SSLContext)
        assert context.check_hostname is False
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED
    assert server.options & ssl.OP_NO_TICKET
    assert server.num_tickets == 0
    assert tls.tls_server_context(server_source).verify_mode == ssl.CERT_NONE


def test_standard_settings_apply_to_every_handshake(server_source: HandSetSource, client_source: HandSetSource) -> None:
    server = tls.server_context(server_source, tls.authorize_id(CLIENT))
    client = tls.client_context(client_source, tls.authorize_id(SERVER))
    server.set_alpn_protocols(["h2", "http/1.1"])
    client.set_alpn_protocols(iter(["h2"]))
    server.set_ciphers("HIGH:!aNULL:!MD5")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.options |= ssl.OP_NO_COMPRESSION
    assert client.options & ssl.OP_NO_COMPRESSION
    outcome = exchange(server, client)
    assert outcome.server_error is None
    assert outcome.alpn == "h2"  # selected by the server from the context it switched to
    assert outcome.version == "TLSv1.2"
    assert str(outcome.client_peer) == SERVER  # TLS 1.2 is checked the same way
    assert str(outcome.server_peer) == CLIENT


def test_the_sni_callback_runs_with_the_spiffe_context(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    server = tls.server_context(server_source, tls.authorize_any())
    calls: list[tuple[str | None, ssl.SSLContext]] = []

    def on_sni(ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        calls.append((server_name, context))

    server.sni_callback = on_sni
    assert server.sni_callback is on_sni
    assert exchange(server, tls.client_context(client_source, tls.authorize_any())).server_error is None
    assert calls == [("localhost", server)]


def test_an_identity_of_its_own_and_npn_are_refused_by_name(server_source: HandSetSource) -> None:
    context = tls.server_context(server_source, tls.authorize_any())
    with pytest.raises(ValueError, match="presents its source's SVID; it takes no load_cert_chain"):
        context.load_cert_chain("/path/to/cert.pem", "/path/to/key.pem")
    with pytest.raises(ValueError, match="does not negotiate NPN"):
        context.set_npn_protocols(["h2"])


def test_authorities_loaded_into_a_context_add_no_trust(
    server_source: HandSetSource, ca: Issued, other_ca: Issued
) -> None:
    server = tls.server_context(server_source, tls.authorize_any())
    server.load_verify_locations(cadata=other_ca.certificate.public_bytes(Encoding.PEM).decode())
    server.set_default_verify_paths()
    outcome = exchange(server, client_as(svid_of(other_ca, CLIENT), [ca.certificate]))
    assert isinstance(outcome.server_error, ssl.SSLCertVerificationError)
    assert outcome.server_peer is None


def test_authorizers_are_checked_when_they_are_made(server_source: HandSetSource) -> None:
    with pytest.raises(TypeError, match=r"authorize must be an authorizer such as tls.authorize_id\(...\), not str"):
        tls.server_context(server_source, CLIENT)  # type: ignore[arg-type]
    with pytest.raises(SpiffeIdError):
        tls.authorize_id("spiffe://Example.org/upper")
    with pytest.raises(SpiffeIdError):
        tls.authorize_member_of("not a trust domain")


def test_peer_spiffe_id_needs_a_finished_spiffe_handshake(server_source: HandSetSource) -> None:
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x")
    with pytest.raises(ValueError, match=r"is not a connection made with a pyspire\.spiffe\.tls context"):
        tls.peer_spiffe_id(plain)
    spiffe = tls.client_context(server_source, tls.authorize_any()).wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x"
    )
    with pytest.raises(ValueError, match="the TLS handshake has not completed"):
        tls.peer_spiffe_id(spiffe)
    with pytest.raises(ValueError, match="is not a connection made"):
        tls.peer_spiffe_id(object())


def test_no_connection_resumes_a_session(
    server_source: HandSetSource, client_source: HandSetSource, ca: Issued, tmp_path: Path
) -> None:
    # openssl offers to resume (TLS 1.2 session IDs) on each of its reconnections: the server
    # never accepts, so every connection shows its certificate and is checked again.
    server = tls.server_context(server_source, tls.authorize_id("spiffe://example.org/openssl"))
    certificate, key = write_pem(make_leaf(ca, "spiffe://example.org/openssl"), tmp_path / "c.pem", tmp_path / "k.pem")
    (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    checked: list[tuple[bool, str]] = []

    def serve() -> None:
        for _ in range(6):  # s_client -reconnect: the first connection and five more
            raw, _ = listener.accept()
            with server.wrap_socket(raw, server_side=True) as connection:
                checked.append((connection.session_reused, str(tls.peer_spiffe_id(connection))))

    thread = threading.Thread(target=serve)
    thread.start()
    openssl = shutil.which("openssl")
    assert openssl is not None, "the tests need the openssl command"
    port = listener.getsockname()[1]
    subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-reconnect", "-CAfile", str(tmp_path / "ca.pem"),
         "-cert", str(certificate), "-key", str(key)],
        input=b"", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    thread.join(30)
    listener.close()
    assert checked == [(False, "spiffe://example.org/openssl")] * 6

    client = tls.client_context(client_source, tls.authorize_any())
    with pytest.raises(ValueError, match="does not resume TLS sessions: every connection is verified"):
        client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x", session=object())  # type: ignore[arg-type]


def test_the_verify_mode_stays_what_makes_the_peer_prove_itself(server_source: HandSetSource) -> None:
    client = tls.client_context(server_source, tls.authorize_any())
    client.verify_mode = ssl.CERT_REQUIRED  # what requests sets: the same, so accepted
    with pytest.raises(ValueError, match="keeps verify_mode CERT_REQUIRED"):
        client.verify_mode = ssl.CERT_NONE
    server = tls.server_context(server_source, tls.authorize_any())
    with pytest.raises(ValueError, match="keeps verify_mode CERT_REQUIRED"):
        server.verify_mode = ssl.CERT_OPTIONAL
    client.check_hostname = True  # a DNS name check on top is the client's choice
    assert client.check_hostname
    assert client.verify_mode == ssl.CERT_REQUIRED
    tls_only = tls.tls_server_context(server_source)
    with pytest.raises(ValueError, match="checks no host name"):
        tls_only.check_hostname = True
    assert tls_only.verify_mode == ssl.CERT_NONE


def test_an_authority_that_is_not_self_signed_anchors_its_chains(ca: Issued) -> None:
    # The bundle holds an intermediate only (its root is in no bundle): go-spiffe trusts every
    # bundle authority as an anchor, and so do these contexts.
    intermediate = make_ca("example.org", issuer=ca, name="intermediate only")
    bundles = bundles_of(example_org=[intermediate.certificate])
    server = HandSetSource(svid_of(intermediate, SERVER), bundles)
    client = HandSetSource(svid_of(intermediate, CLIENT), bundles)
    outcome = exchange(
        tls.server_context(server, tls.authorize_id(CLIENT)), tls.client_context(client, tls.authorize_id(SERVER))
    )
    assert outcome.server_error is None
    assert outcome.client_error is None
    assert str(outcome.server_peer) == CLIENT
    assert str(outcome.client_peer) == SERVER


def test_the_authorizer_decides_every_handshake_of_a_peer_connecting_again(
    server_source: HandSetSource, client_source: HandSetSource
) -> None:
    # The context remembers the peer's checked path; the authorizer's answer is never remembered.
    allowed = {CLIENT}

    def policy(spiffe_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        if str(spiffe_id) not in allowed:
            raise PermissionError(f"{spiffe_id} was removed from the policy")

    server = tls.server_context(server_source, policy)
    client = tls.client_context(client_source, tls.authorize_any())
    assert exchange(server, client).server_error is None
    assert exchange(server, client).server_error is None
    allowed.clear()
    refused = exchange(server, client)
    assert isinstance(refused.server_error, tls.PeerRefusedError)
    assert "was removed from the policy" in str(refused.server_error)
