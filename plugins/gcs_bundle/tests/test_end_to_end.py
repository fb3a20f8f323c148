"""A real server keeping the bundle object current with gcs_bundle, through a CA rotation.

The object, read back through google-cloud-storage, holds the PEM of exactly the X.509
authorities ``pyspire-server bundle show`` prints: after start, after the next CA is prepared
(two roots), and after the old one is revoked. A server whose bucket does not exist refuses
to start, naming the object, as SPIRE's does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.fake_gcs import FakeGcsServer, client
from tests.support.waiting import eventually

OBJECT = "spire-bundle.pem"


def notifier_block(bucket: str) -> str:
    return f'Notifier "gcs_bundle" {{\n plugin_data {{\n  bucket = "{bucket}"\n  object_path = "{OBJECT}"\n }}\n}}'


def object_roots(bucket: str) -> set[x509.Certificate]:
    blob = client().bucket(bucket).get_blob(OBJECT)
    return set() if blob is None else set(x509.load_pem_x509_certificates(blob.download_as_bytes()))


def shown_roots(server: ServerDaemon) -> set[x509.Certificate]:
    return set(x509.load_pem_x509_certificates(server.bundle_pem().encode()))


@pytest.mark.slow
def test_the_object_follows_the_bundle_through_a_ca_rotation(
    tmp_path: Path, fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gcs_server.use_here(monkeypatch)
    client().create_bucket("e2e-notifier")
    server = start_server(
        tmp_path / "server", env=fake_gcs_server.environment(), plugins=notifier_block("e2e-notifier")
    )
    try:
        assert object_roots("e2e-notifier") == shown_roots(server)  # "bundle loaded" came before serving
        for roots in server.x509_rotation():
            assert eventually(lambda roots=roots: len(object_roots("e2e-notifier")) == roots, timeout=20)
            assert object_roots("e2e-notifier") == shown_roots(server)
    finally:
        server.stop()


def test_a_server_whose_bucket_is_missing_does_not_start(tmp_path: Path, fake_gcs_server: FakeGcsServer) -> None:
    text, socket_path, _ = server_config(tmp_path, plugins=notifier_block("absent-bucket"))
    server = ServerDaemon("pyspire-server", tmp_path, socket_path, text, env=fake_gcs_server.environment())
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) != 0
    log = server.log()
    assert "Server failed to start: a notifier failed the bundle loaded event" in log
    assert f"unable to update bundle object absent-bucket/{OBJECT}: 404 Not Found" in log
    assert "Traceback" not in log
    assert not socket_path.exists()
