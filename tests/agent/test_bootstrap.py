"""How a new agent comes to trust its server: trust_bundle_url and insecure_bootstrap."""

from __future__ import annotations

import http.server
import json
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.daemons import start_agent, start_server
from tests.support.pki import make_ca, make_tls_certificate, write_pem


@pytest.fixture
def https_bundle(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An HTTPS server for files in a directory, with a CA file that trusts it."""
    ca = make_ca(name="web root")
    served = tmp_path / "www"
    served.mkdir()
    write_pem(make_tls_certificate(ca), tmp_path / "tls.pem", tmp_path / "tls.key")
    (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.pem", tmp_path / "tls.key")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    (served / "port").write_text(str(httpd.server_address[1]))
    yield served, tmp_path / "ca.pem"
    httpd.shutdown()


def test_trust_bundle_url_bootstraps_the_agent(
    tmp_path: Path, https_bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, ca_file = https_bundle
    port = (served / "port").read_text()
    server = start_server(tmp_path / "server")
    try:
        (served / "bundle.pem").write_text(server.bundle_pem())
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the agent process trusts the web root
        agent = start_agent(
            tmp_path / "agent",
            server,
            server.join_token(),
            bootstrap=f'trust_bundle_url = "https://127.0.0.1:{port}/bundle.pem"',
        )
        assert "Node attestation was successful" in agent.log()
        assert agent.stop() == 0

        # A URL serving something that is not a bundle is a clear startup error.
        (served / "bundle.pem").write_text("not a bundle")
        (tmp_path / "agent" / "data" / "agent-data.json").unlink()
        broken = start_agent(
            tmp_path / "broken",
            server,
            server.join_token(),
            wait=False,
            bootstrap=f'trust_bundle_url = "https://127.0.0.1:{port}/bundle.pem"',
        )
        assert broken.process is not None
        assert broken.process.wait(30) == 1
        assert "cannot be read" in broken.log()
    finally:
        server.stop()


def test_insecure_bootstrap_attests_then_trusts_the_servers_bundle(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token(), bootstrap="insecure_bootstrap = true")
        assert "insecure_bootstrap is set" in agent.log()
        assert "Node attestation was successful" in agent.log()
        # Regression: stopped before its first sync, it had saved its SVID but not the bundle,
        # and the restart trusted the first server it reached all over again. The bundle is
        # saved before the agent serves anything.
        saved = json.loads((tmp_path / "agent" / "data" / "agent-data.json").read_text())
        assert saved["bundle"]
        assert agent.stop() == 0
        # Restarted, it verifies the server with the bundle it saved.
        agent.start()
        assert "Loaded the saved agent SVID" in agent.log()
        assert "insecure_bootstrap is set" not in agent.log().rsplit("Plugin loaded", 1)[-1]
        agent.stop()
    finally:
        server.stop()


def test_agent_without_any_bootstrap_refuses_to_start(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token(), wait=False, bootstrap="")
        assert agent.process is not None
        assert agent.process.wait(30) == 1
        assert "trust_bundle_path or trust_bundle_url" in agent.log()
    finally:
        server.stop()
    assert os.path.exists(tmp_path / "agent")
