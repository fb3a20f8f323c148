"""A real server publishing its bundle to moto's S3 with aws_s3, through a full CA rotation.

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

import boto3
import pytest

from plugins.aws_s3.tests.bucket import BUCKET, REGION, read_object
from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.moto import NO_AWS_FILES, MotoServer
from tests.support.waiting import eventually


def publisher_block(moto: MotoServer, **changes: str) -> str:
    settings = {
        "region": REGION,
        "bucket": BUCKET,
        "object_key": "example.org/bundle.json",
        "format": "spiffe",
        "endpoint": moto.endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        **changes,
    }
    lines = "\n".join(f'            {key} = "{value}"' for key, value in settings.items())
    return f'BundlePublisher "aws_s3" {{\n        plugin_data {{\n{lines}\n        }}\n    }}'


def shown(server: ServerDaemon) -> Any:
    return json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)


def x509_roots(document: Any) -> int:
    return 0 if document is None else len([key for key in document["keys"] if key["use"] == "x509-svid"])


def published() -> Any:
    data = read_object("example.org/bundle.json")
    return None if data is None else json.loads(data)


@pytest.mark.slow
def test_the_object_follows_the_bundle_through_a_ca_rotation(
    tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server.use_here(monkeypatch)  # this process reads the bucket back through moto
    # The server's environment names no AWS endpoint or credentials: only plugin_data does.
    server = start_server(tmp_path / "server", env=NO_AWS_FILES, plugins=publisher_block(moto_server))
    try:
        eventually(lambda: "Failed to publish bundle" in server.log(), timeout=20)
        assert f"failed to put object s3://{BUCKET}/example.org/bundle.json: NoSuchBucket" in server.log()

        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        for roots in server.x509_rotation():  # each change is published at once
            assert eventually(lambda roots=roots: x509_roots(published()) == roots, timeout=20)
            assert published() == shown(server)
    finally:
        server.stop()


def test_a_configuration_the_plugin_refuses_stops_the_server(tmp_path: Path, moto_server: MotoServer) -> None:
    text, socket_path, _ = server_config(tmp_path, plugins=publisher_block(moto_server, format="der"))
    server = ServerDaemon("pyspire-server", tmp_path, socket_path, text, env=NO_AWS_FILES)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(30) != 0
    assert (
        'Error: pyspire-server.conf: plugins: BundlePublisher "aws_s3": plugin_data: key "format": '
        'unknown bundle format "der" (expected one of spiffe, jwks, pem)'
    ) in server.log()
    assert not socket_path.exists()
