"""A real server publishing its bundle to fake-gcs-server with gcp_cloudstorage, through a full CA rotation.

The bucket does not exist when the server starts: the server still starts, and logs why the
bundle could not be published. Once the bucket exists, every change of the bundle (the next
CA prepared, activated, the old one tainted and revoked) reaches the object, which is always
the document ``pyspire-server bundle show -format spiffe`` prints. A configuration the plugin
cannot use stops the server before it serves anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.fake_gcs import FakeGcsServer, client
from tests.support.waiting import eventually

BUCKET = "e2e-trust-bundles"
OBJECT = "example.org/bundle.json"


def publisher_block(**changes: str) -> str:
    settings = {"bucket_name": BUCKET, "object_name": OBJECT, "format": "spiffe", **changes}
    lines = "\n".join(f'            {key} = "{value}"' for key, value in settings.items())
    return f'BundlePublisher "gcp_cloudstorage" {{\n        plugin_data {{\n{lines}\n        }}\n    }}'


def shown(server: ServerDaemon) -> Any:
    return json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)


def x509_roots(document: Any) -> int:
    return 0 if document is None else len([key for key in document["keys"] if key["use"] == "x509-svid"])


def published() -> Any:
    blob = client().bucket(BUCKET).get_blob(OBJECT)
    return None if blob is None else json.loads(blob.download_as_bytes())


@pytest.mark.slow
def test_the_object_follows_the_bundle_through_a_ca_rotation(
    tmp_path: Path, fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gcs_server.use_here(monkeypatch)  # this process reads the object back through the fake
    server = start_server(tmp_path / "server", env=fake_gcs_server.environment(), plugins=publisher_block())
    try:
        eventually(lambda: "Failed to publish bundle" in server.log(), timeout=20)
        assert f"failed to write bundle to gs://{BUCKET}/{OBJECT}: 404 Not Found" in server.log()

        client().create_bucket(BUCKET)
        for roots in server.x509_rotation():  # each change is published at once
            assert eventually(lambda roots=roots: x509_roots(published()) == roots, timeout=20)
            assert published() == shown(server)
    finally:
        server.stop()


def test_a_configuration_the_plugin_refuses_stops_the_server(tmp_path: Path, fake_gcs_server: FakeGcsServer) -> None:
    text, socket_path, _ = server_config(tmp_path, plugins=publisher_block(format="der"))
    server = ServerDaemon("pyspire-server", tmp_path, socket_path, text, env=fake_gcs_server.environment())
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(30) != 0
    assert (
        'Error: pyspire-server.conf: plugins: BundlePublisher "gcp_cloudstorage": plugin_data: key "format": '
        'unknown bundle format "der" (expected one of spiffe, jwks, pem)'
    ) in server.log()
    assert not socket_path.exists()
