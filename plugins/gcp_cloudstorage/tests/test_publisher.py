"""gcp_cloudstorage against fake-gcs-server: SPIRE's formats, its configuration checks, and when it writes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.plugin.bundle_format import BundleFormat
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import BundlePublisher
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import Bundle

from tests.support.fake_gcs import Gcs, TokenEndpoint, client


def settings(gcs: Gcs, **changes: Any) -> dict[str, Any]:
    return {"bucket_name": gcs.bucket, "object_name": "bundle", "format": "spiffe", **changes}


def publisher(tmp_path: Path, plugin_data: Mapping[str, Any]) -> BundlePublisher:
    handle = load_plugin("server", "BundlePublisher", "gcp_cloudstorage", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, BundlePublisher)
    return handle


def full_bundle() -> Bundle:
    """Two X.509 roots, a JWT key, a sequence number and a refresh hint: every member a format may carry."""
    ca = TestCa.create(TEST_TRUST_DOMAIN)
    other = TestCa.create(TEST_TRUST_DOMAIN)
    jwt_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    bundle = ca.bundle(other.certificate).with_jwt_authority("jwt-key-1", jwt_key).with_sequence_number(7)
    return bundle.with_refresh_hint(timedelta(seconds=300))


@pytest.mark.parametrize("name", ["spiffe", "jwks", "PEM"])
def test_the_object_is_the_bundle_in_the_configured_format(gcs: Gcs, tmp_path: Path, name: str) -> None:
    bundle = full_bundle()
    publisher(tmp_path, settings(gcs, format=name)).publish_bundle(bundle)
    data = gcs.read("bundle")
    assert data == BundleFormat.parse(name).render(bundle)
    if name == "spiffe":
        assert Bundle.parse(TEST_TRUST_DOMAIN, data) == bundle
    if name == "PEM":
        assert Bundle.parse_x509(TEST_TRUST_DOMAIN, data).x509_authorities == bundle.x509_authorities


def test_the_refresh_hint_replaces_the_bundles_own(gcs: Gcs, tmp_path: Path) -> None:
    bundle = full_bundle()
    publisher(tmp_path, settings(gcs, refresh_hint="10m")).publish_bundle(bundle)
    document = json.loads(gcs.read("bundle") or b"")
    assert document["spiffe_refresh_hint"] == 600
    assert document == bundle.with_refresh_hint(timedelta(minutes=10)).to_spiffe_document()


def test_an_unchanged_bundle_is_not_written_again(gcs: Gcs, tmp_path: Path) -> None:
    """As SPIRE's plugin: the server republishes every 30 s, which costs no upload while nothing changed."""
    handle = publisher(tmp_path, settings(gcs))
    bundle = full_bundle()
    handle.publish_bundle(bundle)
    client().bucket(gcs.bucket).blob("bundle").delete()
    handle.publish_bundle(bundle)
    assert gcs.read("bundle") is None
    changed = bundle.with_sequence_number(8)
    handle.publish_bundle(changed)
    assert json.loads(gcs.read("bundle") or b"") == changed.to_spiffe_document()


def test_a_failed_write_is_tried_again_with_the_same_bundle(gcs: Gcs, tmp_path: Path) -> None:
    handle = publisher(tmp_path, settings(gcs, bucket_name="created-later"))
    bundle = full_bundle()
    with pytest.raises(PluginError, match=r"failed to write bundle to gs://created-later/bundle: 404 Not Found"):
        handle.publish_bundle(bundle)
    client().create_bucket("created-later")
    handle.publish_bundle(bundle)
    assert client().bucket("created-later").blob("bundle").download_as_bytes() == BundleFormat.SPIFFE.render(bundle)


def test_the_service_account_file_is_the_identity_used(gcs: Gcs, tmp_path: Path, token_endpoint: TokenEndpoint) -> None:
    account = token_endpoint.service_account_file(tmp_path, email="bundles@test-project.iam.gserviceaccount.com")
    publisher(tmp_path, settings(gcs, service_account_file=str(account))).publish_bundle(full_bundle())
    assert set(token_endpoint.granted) == {"bundles@test-project.iam.gserviceaccount.com"}
    assert gcs.read("bundle") is not None


def test_without_a_service_account_file_missing_default_credentials_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs: Gcs
) -> None:
    """Application Default Credentials are looked up at configure time, as SPIRE's client does."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")  # with an emulator, no credentials are looked for
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(CatalogError, match=r'key "service_account_file".*failed to create client:.*absent\.json'):
        publisher(tmp_path, settings(gcs))


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"bucket_name": ""}, "bucket_name", "configuration is missing the bucket name"),
        ({"object_name": ""}, "object_name", "configuration is missing the object name"),
        ({"format": ""}, "format", "configuration is missing the bundle format"),
        ({"format": "der"}, "format", 'unknown bundle format "der"'),
        ({"refresh_hint": "-5m"}, "refresh_hint", "cannot be negative"),
        ({"refresh_hint": "soon"}, "refresh_hint", ""),
        ({"service_account_file": "/nonexistent/sa.json"}, "service_account_file", "failed to create client"),
        ({"bucket": "x"}, "bucket", ""),
    ],
)
def test_bad_configuration_is_refused_by_name(
    gcs: Gcs, tmp_path: Path, changes: dict[str, str], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}".*{reason}'):
        publisher(tmp_path, settings(gcs, **changes))


def test_a_service_account_file_that_is_not_a_credential_is_refused(gcs: Gcs, tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_text('{"type": "nonsense"}')
    with pytest.raises(CatalogError, match=r'key "service_account_file".*failed to create client'):
        publisher(tmp_path, settings(gcs, service_account_file=str(path)))
