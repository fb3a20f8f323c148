"""The bundle endpoint and the fetch of a partner's bundle, over real HTTPS on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.plugin.records import FederationRelationship
from pyspire.server.federation.endpoint import BundleEndpointServer
from pyspire.server.federation.fetch import MAX_BUNDLE_BYTES, FetchError, fetch_bundle
from pyspire.spiffe import Bundle, SpiffeId, TrustDomain
from pyspire.transport import ServerTlsContexts

from tests.support.pki import Issued, make_ca, make_leaf, make_tls_certificate, write_pem

PARTNER = TrustDomain.parse("partner.org")
ENDPOINT_ID = SpiffeId.parse("spiffe://partner.org/spire/server")


class RunningEndpoint:
    """A BundleEndpointServer on its own event loop thread, serving ``bundle``."""

    def __init__(self, identity: Issued, bundle: Bundle | None) -> None:
        self.bundle = bundle
        tls = ServerTlsContexts(alpn=("http/1.1",), client_certificates=False)
        tls.update([identity.certificate], identity.key)
        self.server = BundleEndpointServer("127.0.0.1", 0, tls, lambda: self.bundle)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/"

    def close(self) -> None:
        if self.loop.is_closed() or not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def partner_ca() -> Issued:
    return make_ca("partner.org", name="partner CA")


@pytest.fixture
def endpoint(partner_ca: Issued) -> Iterator[RunningEndpoint]:
    bundle = Bundle(PARTNER, [partner_ca.certificate], sequence_number=7, refresh_hint=timedelta(minutes=2))
    running = RunningEndpoint(make_leaf(partner_ca, str(ENDPOINT_ID)), bundle)
    yield running
    running.close()


def spiffe_relationship(url: str, endpoint_id: SpiffeId = ENDPOINT_ID) -> FederationRelationship:
    return FederationRelationship(PARTNER, url, "https_spiffe", endpoint_id)


def raw_request(port: int, request: bytes, ca: Issued) -> bytes:
    context = ssl.create_default_context(cadata=ca.certificate.public_bytes(serialization.Encoding.PEM).decode())
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(request)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- https_spiffe ----------------------------------------------------------------------


def test_https_spiffe_fetch_returns_the_served_bundle(endpoint: RunningEndpoint, partner_ca: Issued) -> None:
    fetched = fetch_bundle(spiffe_relationship(endpoint.url), [partner_ca.certificate])
    assert fetched == endpoint.bundle
    assert fetched.sequence_number == 7
    assert fetched.refresh_hint == timedelta(minutes=2)


def test_https_spiffe_refuses_another_spiffe_id(endpoint: RunningEndpoint, partner_ca: Issued) -> None:
    expected = SpiffeId.parse("spiffe://partner.org/bundle-server")
    with pytest.raises(
        FetchError, match=r"is spiffe://partner\.org/spire/server, expected spiffe://partner\.org/bundle"
    ):
        fetch_bundle(spiffe_relationship(endpoint.url, expected), [partner_ca.certificate])


def test_https_spiffe_refuses_an_endpoint_its_bundle_does_not_vouch_for(endpoint: RunningEndpoint) -> None:
    stranger = make_ca("partner.org", name="some other CA")
    with pytest.raises(FetchError, match="does not verify"):
        fetch_bundle(spiffe_relationship(endpoint.url), [stranger.certificate])


def test_https_spiffe_needs_the_partner_bundle_first(endpoint: RunningEndpoint) -> None:
    with pytest.raises(FetchError, match=r"no bundle for partner\.org.*set it first"):
        fetch_bundle(spiffe_relationship(endpoint.url), [])


# --- https_web -------------------------------------------------------------------------


def test_https_web_uses_the_system_roots_and_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partner_ca: Issued
) -> None:
    web_root = make_ca(name="web root")
    (tmp_path / "roots.pem").write_bytes(web_root.certificate.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "roots.pem"))
    served = Bundle(PARTNER, [partner_ca.certificate])
    running = RunningEndpoint(make_tls_certificate(web_root, "127.0.0.1"), served)
    try:
        relationship = FederationRelationship(PARTNER, running.url, "https_web")
        assert fetch_bundle(relationship) == served
        by_name = FederationRelationship(PARTNER, running.url.replace("127.0.0.1", "localhost"), "https_web")
        with pytest.raises(FetchError, match="does not verify"):
            fetch_bundle(by_name)  # the certificate names 127.0.0.1, not localhost
    finally:
        running.close()


# --- the endpoint's HTTP -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"GET /?ignored=1 HTTP/1.1\r\n\r\n", b"200"),
        (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"\x00\xff garbage\r\n\r\n", b"400"),
    ],
)
def test_endpoint_answers_only_get_on_slash(
    endpoint: RunningEndpoint, partner_ca: Issued, request_bytes: bytes, status: bytes
) -> None:
    answer = raw_request(endpoint.server.port, request_bytes, partner_ca)
    assert answer.split(b" ", 2)[1] == status
    if status == b"200":
        assert b"application/json" in answer
        assert Bundle.parse(PARTNER, answer.split(b"\r\n\r\n", 1)[1]) == endpoint.bundle


def test_endpoint_drops_oversized_requests_and_keeps_serving(endpoint: RunningEndpoint, partner_ca: Issued) -> None:
    huge = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    try:
        answer = raw_request(endpoint.server.port, huge, partner_ca)
    except (ConnectionError, ssl.SSLError):
        answer = b""  # closed while the client was still sending: as good as no answer
    assert answer == b""
    assert fetch_bundle(spiffe_relationship(endpoint.url), [partner_ca.certificate]) == endpoint.bundle


def test_endpoint_without_a_bundle_is_unavailable(partner_ca: Issued) -> None:
    running = RunningEndpoint(make_leaf(partner_ca, str(ENDPOINT_ID)), None)
    try:
        with pytest.raises(FetchError, match="HTTP 503"):
            fetch_bundle(spiffe_relationship(running.url), [partner_ca.certificate])
    finally:
        running.close()


# --- what a fetch refuses ----------------------------------------------------------------


class Misbehaving:
    """An HTTPS server with a certificate the partner bundle vouches for, answering as told."""

    def __init__(self, directory: Path, ca: Issued, answer: tuple[int, dict[str, str], bytes]) -> None:
        cert, key = write_pem(make_leaf(ca, str(ENDPOINT_ID)), directory / "c.pem", directory / "k.pem")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((200, {}, b"not json"), "did not serve a valid SPIFFE bundle"),
        ((200, {}, b'{"no_keys": []}'), "did not serve a valid SPIFFE bundle"),
        ((500, {}, b"{}"), "answered HTTP 500"),
        ((302, {"Location": "http://127.0.0.1/plain"}, b""), "redirected to a non-https URL"),
        ((200, {}, b"x" * (MAX_BUNDLE_BYTES + 10)), "larger than"),
    ],
)
def test_fetch_refuses_what_is_not_a_bundle(
    tmp_path: Path, partner_ca: Issued, answer: tuple[int, dict[str, str], bytes], message: str
) -> None:
    server = Misbehaving(tmp_path, partner_ca, answer)
    try:
        with pytest.raises(FetchError, match=message):
            fetch_bundle(spiffe_relationship(server.url), [partner_ca.certificate])
    finally:
        server.close()


def test_fetch_of_a_closed_port_says_where(partner_ca: Issued) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match=f"https://127.0.0.1:{port}/"):
        fetch_bundle(spiffe_relationship(f"https://127.0.0.1:{port}/"), [partner_ca.certificate])
