"""Two trust domains federated through their bundle endpoints: servers, agents, workloads, mutual TLS.

``a.org`` knows its partner from its config (``federates_with``); ``b.org`` learns it through
the TrustDomain API (``federation create``). Both use the ``https_spiffe`` profile, so each
is seeded with the other's bundle first. A workload in each trust domain then gets the
other's bundle and they complete mutual TLS verifying each other's SPIFFE IDs; with
``b.org``'s server stopped, nothing already delivered changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.plugin.records import FederationRelationship
from pyspire.server.federation.fetch import fetch_bundle
from pyspire.spiffe import Bundle, TrustDomain, X509Svid
from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.workloadapi import WorkloadApiClient, X509Context

from tests.support.daemons import AgentDaemon, ServerDaemon, server_config, start_agent, start_server
from tests.support.free_port import free_port
from tests.support.pki import make_ca, make_tls_certificate, write_pem
from tests.support.workloads import fetched_spiffe_id, x509_context

A, B = TrustDomain.parse("a.org"), TrustDomain.parse("b.org")


def federation_block(port: int, partner_port: int | None = None) -> str:
    partner = (
        f'federates_with "b.org" {{\n bundle_endpoint_url = "https://127.0.0.1:{partner_port}"\n'
        ' bundle_endpoint_profile "https_spiffe" {\n  endpoint_spiffe_id = "spiffe://b.org/spire/server"\n }\n}'
        if partner_port
        else ""
    )
    return (
        "federation {\n"
        f' bundle_endpoint {{\n  address = "127.0.0.1"\n  port = {port}\n  refresh_hint = "2m"\n }}\n'
        f"{partner}\n}}"
    )


def jwt_bundles(agent: AgentDaemon) -> BundleSet:
    async def fetch() -> BundleSet:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            return await client.fetch_jwt_bundles()

    return asyncio.run(fetch())


def tls_context(svid: X509Svid, trusted: list[x509.Certificate], directory: Path, server: bool) -> ssl.SSLContext:
    """A context presenting ``svid`` and requiring the peer to chain to ``trusted`` (SPIFFE IDs checked after)."""
    chain_pem, key_pem = svid.marshal()
    (directory / "svid.pem").write_bytes(chain_pem)
    (directory / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(directory / "svid.pem", directory / "key.pem")
    context.load_verify_locations(cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in trusted))
    return context


def peer_id(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    (uri,) = sans.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uri


def mutual_tls(server_side: X509Context, client_side: X509Context, directory: Path) -> tuple[str, str]:
    """Handshake ``client_side``'s SVID against ``server_side``'s; the SPIFFE ID each side saw."""
    server_td = server_side.default_svid.spiffe_id.trust_domain
    client_td = client_side.default_svid.spiffe_id.trust_domain
    client_bundle, server_bundle = server_side.bundles.get(client_td), client_side.bundles.get(server_td)
    assert client_bundle is not None, f"{server_td} workload has no bundle for {client_td}"
    assert server_bundle is not None, f"{client_td} workload has no bundle for {server_td}"
    (directory / "s").mkdir(exist_ok=True)
    (directory / "c").mkdir(exist_ok=True)
    server_context = tls_context(server_side.default_svid, list(client_bundle.x509_authorities), directory / "s", True)
    client_context = tls_context(client_side.default_svid, list(server_bundle.x509_authorities), directory / "c", False)
    seen: dict[str, str] = {}
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            seen["by_server"] = peer_id(tls)
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with (
        socket.create_connection(listener.getsockname(), timeout=10) as raw,
        client_context.wrap_socket(raw) as tls,
    ):
        seen["by_client"] = peer_id(tls)
        assert tls.recv(2) == b"ok"
    thread.join(10)
    listener.close()
    return seen["by_server"], seen["by_client"]


@contextlib.contextmanager
def _started_domains(directory: Path) -> Iterator[tuple[ServerDaemon, ServerDaemon]]:
    """``a.org``'s server (federating with ``b.org`` from its config) and ``b.org``'s, neither seeded."""
    port_a, port_b = free_port(), free_port()
    server_b = start_server(directory / "b", trust_domain="b.org", extra=federation_block(port_b))
    try:
        server_a = start_server(directory / "a", trust_domain="a.org", extra=federation_block(port_a, port_b))
        try:
            yield server_a, server_b
        finally:
            server_a.stop()
    finally:
        server_b.stop()


@pytest.fixture
def two_domains(tmp_path: Path) -> Iterator[tuple[ServerDaemon, ServerDaemon]]:
    """A pair of its own for a test that seeds, federates and stops them."""
    with _started_domains(tmp_path) as servers:
        yield servers


@pytest.fixture(scope="module")
def untouched_domains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerDaemon, ServerDaemon]]:
    """One pair shared by the tests that only ask for refreshes that fail (they change nothing)."""
    with _started_domains(tmp_path_factory.mktemp("untouched")) as servers:
        yield servers


def test_workloads_in_two_trust_domains_trust_each_other(
    two_domains: tuple[ServerDaemon, ServerDaemon], tmp_path: Path
) -> None:
    server_a, server_b = two_domains
    (tmp_path / "a.pem").write_text(server_a.bundle_pem())
    (tmp_path / "b.pem").write_text(server_b.bundle_pem())
    port_a = federation_port(server_a)

    # a.org: relationship from its config; its partner's bundle seeded by hand.
    server_a.cli("bundle", "set", "-id", "spiffe://b.org", "-path", str(tmp_path / "b.pem"))
    # b.org: relationship (and seed bundle) through the TrustDomain API.
    created = server_b.cli(
        "federation", "create", "-trustDomain", "a.org",
        "-bundleEndpointURL", f"https://127.0.0.1:{port_a}",
        "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://a.org/spire/server",
        "-trustDomainBundlePath", str(tmp_path / "a.pem"),
    ).stdout  # fmt: skip
    assert "Endpoint SPIFFE ID        : spiffe://a.org/spire/server" in created
    assert "Trust domain              : a.org" in server_b.cli("federation", "list").stdout

    server_a.cli("federation", "refresh", "-id", "b.org")
    server_b.cli("federation", "refresh", "-id", "a.org")
    # The fetched bundle is the partner's own, JWT keys included (the seed had only its CA).
    fetched = json.loads(server_a.cli("bundle", "list", "-id", "spiffe://b.org", "-format", "spiffe").stdout)
    own = json.loads(server_b.cli("bundle", "show", "-format", "spiffe").stdout)
    assert {k.get("kid") for k in fetched["keys"]} == {k.get("kid") for k in own["keys"]}
    assert fetched["spiffe_refresh_hint"] == 120

    agents = []
    try:
        for server, td, name, partner in ((server_a, A, "front", B), (server_b, B, "back", A)):
            agent = start_agent(
                tmp_path / f"agent-{td}", server, server.join_token(f"spiffe://{td}/node"), trust_domain=str(td)
            )
            agents.append(agent)
            server.cli(
                "entry", "create", "-parentID", f"spiffe://{td}/node", "-spiffeID", f"spiffe://{td}/{name}",
                "-selector", f"unix:uid:{os.getuid()}", "-federatesWith", f"spiffe://{partner}",
            )  # fmt: skip
            assert fetched_spiffe_id(agent) == f"spiffe://{td}/{name}"
        agent_a, agent_b = agents
        front, back = x509_context(agent_a), x509_context(agent_b)
        assert set(front.bundles.trust_domains()) == {A, B}
        assert set(back.bundles.trust_domains()) == {A, B}
        jwt_b = jwt_bundles(agent_a).get(B)
        assert jwt_b is not None
        assert set(jwt_b.jwt_authorities) == {k["kid"] for k in own["keys"] if k.get("use") == "jwt-svid"}

        by_server, by_client = mutual_tls(back, front, tmp_path)
        assert (by_server, by_client) == ("spiffe://a.org/front", "spiffe://b.org/back")

        # The CLI shows and writes the federated bundle beside the workload's own, as SPIRE's does.
        shown = agent_a.cli("api", "fetch", "x509", "-write", str(tmp_path / "written")).stdout
        assert "[spiffe://b.org] CA #1 Valid Until:" in shown
        written = Bundle.parse_x509(B, (tmp_path / "written" / "federated_bundle.0.0.pem").read_bytes())
        assert written.x509_authorities == front.bundles.get(B).x509_authorities  # type: ignore[union-attr]
        listed = server_a.cli("bundle", "list", "-id", "spiffe://b.org").stdout
        assert Bundle.parse_x509(B, listed.encode()).x509_authorities == written.x509_authorities

        # b.org goes away: a.org cannot refresh, and keeps what it has.
        server_b.stop()
        refused = server_a.cli("federation", "refresh", "-id", "b.org", check=False)
        assert refused.returncode == 1
        assert "failed to refresh the bundle of b.org" in refused.stderr
        assert "b.org" in server_a.cli("bundle", "list").stdout
        assert B in x509_context(agent_a).bundles
    finally:
        for agent in agents:
            agent.stop()


def federation_port(server: ServerDaemon) -> int:
    return int(server.config_text.split("bundle_endpoint {", 1)[1].split("port = ", 1)[1].split()[0])


def test_refresh_of_an_unknown_relationship_is_not_found(
    untouched_domains: tuple[ServerDaemon, ServerDaemon],
) -> None:
    server_a, _ = untouched_domains
    result = server_a.cli("federation", "refresh", "-id", "nowhere.org", check=False)
    assert result.returncode == 1
    assert "NotFound" in result.stderr


def test_https_spiffe_refresh_without_a_seed_bundle_says_so(
    untouched_domains: tuple[ServerDaemon, ServerDaemon],
) -> None:
    server_a, _ = untouched_domains
    result = server_a.cli("federation", "refresh", "-id", "b.org", check=False)
    assert result.returncode == 1
    assert "no bundle for b.org" in result.stderr


def test_https_web_profile_serves_the_bundle_with_the_certificate_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web_root = make_ca(name="web root")
    cert, key = write_pem(make_tls_certificate(web_root), tmp_path / "web.pem", tmp_path / "web.key")
    (tmp_path / "roots.pem").write_bytes(web_root.certificate.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    block = (
        f'federation {{\n bundle_endpoint {{\n  address = "127.0.0.1"\n  port = {port}\n'
        f'  profile "https_web" {{\n   serving_cert_file {{\n    cert_file_path = "{cert}"\n'
        f'    key_file_path = "{key}"\n   }}\n  }}\n }}\n}}'
    )
    server = start_server(tmp_path / "server", extra=block)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "roots.pem"))
        relationship = FederationRelationship(
            TrustDomain.parse("example.org"), f"https://127.0.0.1:{port}", "https_web"
        )
        served = fetch_bundle(relationship)
        shown = json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)
        assert len(served.x509_authorities) == sum(1 for k in shown["keys"] if k["use"] == "x509-svid")
    finally:
        server.stop()


def test_an_unreadable_serving_certificate_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    block = (
        'federation {\n bundle_endpoint {\n  address = "127.0.0.1"\n  port = 0\n'
        '  profile "https_web" {\n   serving_cert_file {\n    cert_file_path = "/nonexistent/web.pem"\n'
        '    key_file_path = "/nonexistent/web.key"\n   }\n  }\n }\n}'
    )
    text, socket_path, _ = server_config(tmp_path, extra=block)
    server = ServerDaemon("pyspire-server", tmp_path, socket_path, text).start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    assert "federation.bundle_endpoint: cannot use serving_cert_file" in server.log()
    assert "/nonexistent/web.pem" in server.log()
