"""gcs_bundle against fake-gcs-server: the PEM written, generation preconditions, configuration checks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import Notifier
from pyspire.plugin.logger import LOGGER_PREFIX
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import Bundle

from tests.support.fake_gcs import Gcs, TokenEndpoint, client


def settings(gcs: Gcs, **changes: Any) -> dict[str, Any]:
    return {"bucket": gcs.bucket, "object_path": "bundle.pem", **changes}


def notifier(tmp_path: Path, plugin_data: Mapping[str, Any]) -> Notifier:
    handle = load_plugin("server", "Notifier", "gcs_bundle", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, Notifier)
    return handle


def two_root_bundle() -> Bundle:
    return TestCa.create(TEST_TRUST_DOMAIN).bundle(TestCa.create(TEST_TRUST_DOMAIN).certificate)


def test_the_object_is_the_pem_of_the_x509_roots_only(gcs: Gcs, tmp_path: Path) -> None:
    bundle = two_root_bundle()
    notifier(tmp_path, settings(gcs)).notify_bundle_loaded(bundle)
    blob = gcs.blob("bundle.pem")
    assert blob is not None
    assert blob.download_as_bytes() == bundle.marshal_x509_pem()
    assert blob.content_type == "application/x-pem-file"


def test_an_object_written_by_someone_else_is_replaced_at_its_generation(gcs: Gcs, tmp_path: Path) -> None:
    client().bucket(gcs.bucket).blob("bundle.pem").upload_from_string(b"stale")
    before = gcs.blob("bundle.pem")
    assert before is not None
    bundle = two_root_bundle()
    notifier(tmp_path, settings(gcs)).notify_bundle_updated(bundle)
    after = gcs.blob("bundle.pem")
    assert after is not None
    assert after.download_as_bytes() == bundle.marshal_x509_pem()
    assert after.generation != before.generation


def test_a_missing_bucket_is_an_error_naming_the_object(gcs: Gcs, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"unable to update bundle object absent-bucket/bundle.pem: 404 Not Found"):
        notifier(tmp_path, settings(gcs, bucket="absent-bucket")).notify_bundle_loaded(two_root_bundle())


def test_the_service_account_file_is_the_identity_used(gcs: Gcs, tmp_path: Path, token_endpoint: TokenEndpoint) -> None:
    account = token_endpoint.service_account_file(tmp_path, email="notifier@test-project.iam.gserviceaccount.com")
    notifier(tmp_path, settings(gcs, service_account_file=str(account))).notify_bundle_loaded(two_root_bundle())
    assert set(token_endpoint.granted) == {"notifier@test-project.iam.gserviceaccount.com"}
    assert gcs.read("bundle.pem") is not None


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"bucket": ""}, "bucket", "bucket must be set"),
        ({"object_path": ""}, "object_path", "object_path must be set"),
        ({"service_account_file": "/nonexistent/sa.json"}, "service_account_file", "failed to create client"),
        ({"bucket_name": "x"}, "bucket_name", ""),
    ],
)
def test_bad_configuration_is_refused_by_name(
    gcs: Gcs, tmp_path: Path, changes: dict[str, str], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}".*{reason}'):
        notifier(tmp_path, settings(gcs, **changes))


class _RacingWriter(logging.Handler):
    """Another server's write, made the first time the plugin has read the generation and not yet written."""

    def __init__(self, gcs: Gcs) -> None:
        super().__init__(logging.DEBUG)
        self.gcs = gcs
        self.raced = 0
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if record.getMessage() == "Bundle object retrieved" and not self.raced:
            self.raced += 1
            client().bucket(self.gcs.bucket).blob("bundle.pem").upload_from_string(b"the other server's")


def test_a_write_that_races_another_server_reads_again_and_wins_with_the_newest_bundle(
    gcs: Gcs, tmp_path: Path
) -> None:
    """The generation precondition refuses the first upload (412); the plugin reads the new generation and retries."""
    logger = logging.getLogger(f"{LOGGER_PREFIX}.notifier.gcs_bundle")
    racer = _RacingWriter(gcs)
    logger.addHandler(racer)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        bundle = two_root_bundle()
        notifier(tmp_path, settings(gcs)).notify_bundle_updated(bundle)
    finally:
        logger.removeHandler(racer)
        logger.setLevel(level)
    assert racer.raced == 1
    assert racer.messages == [
        "Bundle object retrieved",
        "Conflict detected setting bundle object",  # the other server's write refused this one
        "Bundle object retrieved",
        "Bundle object updated",
    ]
    assert gcs.read("bundle.pem") == bundle.marshal_x509_pem()
