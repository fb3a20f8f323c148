"""aws_s3 against moto's S3: SPIRE's formats, its configuration checks, and when it writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.plugin.errors import CatalogError, Internal, PluginError
from pyspire.plugin.facades import BundlePublisher
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import Bundle
from pyspire.spiffe.bundle import public_key_to_jwk

from plugins.aws_s3.tests.bucket import BUCKET, REGION, read_object
from tests.support.moto import MotoServer


def settings(**changes: Any) -> dict[str, Any]:
    return {"region": REGION, "bucket": BUCKET, "object_key": "bundle", "format": "spiffe", **changes}


def publisher(tmp_path: Path, plugin_data: Mapping[str, Any]) -> BundlePublisher:
    handle = load_plugin("server", "BundlePublisher", "aws_s3", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, BundlePublisher)
    return handle


def full_bundle() -> Bundle:
    """Two X.509 roots, a JWT key, a sequence number and a refresh hint: every member a format may carry."""
    ca = TestCa.create(TEST_TRUST_DOMAIN)
    other = TestCa.create(TEST_TRUST_DOMAIN)
    jwt_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    bundle = ca.bundle(other.certificate).with_jwt_authority("jwt-key-1", jwt_key).with_sequence_number(7)
    return bundle.with_refresh_hint(timedelta(seconds=300))


def test_the_spiffe_format_is_the_spiffe_bundle_document(aws: MotoServer, tmp_path: Path) -> None:
    bundle = full_bundle()
    publisher(tmp_path, settings()).publish_bundle(bundle)
    data = read_object("bundle")
    assert data is not None
    assert json.loads(data) == bundle.to_spiffe_document()
    assert Bundle.parse(TEST_TRUST_DOMAIN, data) == bundle


def test_the_jwks_format_is_a_plain_jwk_set_of_both_kinds_of_authority(aws: MotoServer, tmp_path: Path) -> None:
    bundle = full_bundle()
    publisher(tmp_path, settings(format="jwks")).publish_bundle(bundle)
    document = json.loads(read_object("bundle") or b"")
    # No "use", no spiffe_sequence or spiffe_refresh_hint: what go-jose writes for SPIRE.
    x509_keys = [
        {
            **public_key_to_jwk(c.public_key()),
            "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()],
        }
        for c in bundle.x509_authorities
    ]
    jwt_keys = [{"kid": kid, **public_key_to_jwk(key)} for kid, key in sorted(bundle.jwt_authorities.items())]
    assert document == {"keys": x509_keys + jwt_keys}


@pytest.mark.parametrize("name", ["pem", "PEM"])
def test_the_pem_format_holds_only_the_x509_authorities(aws: MotoServer, tmp_path: Path, name: str) -> None:
    bundle = full_bundle()
    publisher(tmp_path, settings(format=name)).publish_bundle(bundle)
    data = read_object("bundle")
    assert data is not None
    assert data == bundle.marshal_x509_pem()
    assert Bundle.parse_x509(TEST_TRUST_DOMAIN, data).x509_authorities == bundle.x509_authorities


def test_an_unchanged_bundle_is_not_written_again(aws: MotoServer, tmp_path: Path) -> None:
    """As SPIRE's plugin: the server republishes every 30 s, which costs no PutObject while nothing changed."""
    handle = publisher(tmp_path, settings())
    bundle = full_bundle()
    handle.publish_bundle(bundle)
    boto3.client("s3", region_name=REGION).delete_object(Bucket=BUCKET, Key="bundle")
    handle.publish_bundle(bundle)
    assert read_object("bundle") is None
    changed = bundle.with_sequence_number(8)
    handle.publish_bundle(changed)
    assert json.loads(read_object("bundle") or b"") == changed.to_spiffe_document()


def test_a_failed_write_is_tried_again_with_the_same_bundle(aws: MotoServer, tmp_path: Path) -> None:
    handle = publisher(tmp_path, settings(bucket="created-later"))
    bundle = full_bundle()
    with pytest.raises(PluginError, match=r"failed to put object s3://created-later/bundle: NoSuchBucket"):
        handle.publish_bundle(bundle)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="created-later")
    handle.publish_bundle(bundle)
    assert json.loads(read_object("bundle", "created-later") or b"") == bundle.to_spiffe_document()


def test_configured_keys_are_the_ones_used(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without keys, boto3's default chain (the other tests: AWS_* variables); with them, those."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(Internal, match="Unable to locate credentials"):
        publisher(tmp_path, settings()).publish_bundle(full_bundle())
    publisher(tmp_path, settings(access_key_id="AKIDEXAMPLE", secret_access_key="secret")).publish_bundle(full_bundle())
    assert read_object("bundle") is not None


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"region": ""}, "region", "configuration is missing the region"),
        ({"bucket": ""}, "bucket", "configuration is missing the bucket name"),
        ({"object_key": ""}, "object_key", "configuration is missing the object key"),
        ({"format": "der"}, "format", 'unknown bundle format "der"'),
        ({"format": ""}, "format", 'unknown bundle format ""'),
        ({"endpoint": "minio.example.org"}, "endpoint", "is not an http:// or https:// URL"),
        ({"access_key_id": "AKIDEXAMPLE"}, "secret_access_key", "go together"),
        ({"secret_access_key": "secret"}, "access_key_id", "go together"),
    ],
)
def test_bad_configuration_is_refused_by_name(tmp_path: Path, changes: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}".*{reason}'):
        publisher(tmp_path, settings(**changes))


@pytest.mark.parametrize("key", ["region", "bucket", "object_key", "format"])
def test_a_missing_required_key_is_refused_by_name(tmp_path: Path, key: str) -> None:
    plugin_data = settings()
    del plugin_data[key]
    with pytest.raises(CatalogError, match=f'key "{key}"'):
        publisher(tmp_path, plugin_data)
