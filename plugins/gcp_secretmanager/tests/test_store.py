"""gcp_secretmanager against the fake Secret Manager: SPIRE's document, label, IAM policy, deletion and refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.errors import CatalogError, Internal, InvalidArgument, Unavailable
from pyspire.plugin.facades import SvidStore
from pyspire.plugin.svid_document import secret_document
from pyspire.plugin.testing import validate_plugin
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import TrustDomain

from plugins.gcp_secretmanager.tests.stored import reader, secret_name, stored_document
from tests.support.free_port import free_port
from tests.support.gcp_secret_manager import FakeSecretManager

PARTNER = TrustDomain("partner.test")
P = r"^svidstore\(gcp_secretmanager\): "
"""What the agent's facade puts before the plugin's reason."""
DB = ["name:db", "projectid:test-project"]
SA = "workload@test-project.iam.gserviceaccount.com"
ACCESSOR = "roles/secretmanager.secretAccessor"
LABEL = hashlib.sha1(b"example.org").hexdigest()


def store(tmp_path: Path, plugin_data: dict[str, Any], trust_domain: str = "") -> SvidStore:
    core = make_core_config(tmp_path)
    if trust_domain:
        core = type(core)(trust_domain=TrustDomain(trust_domain), data_dir=core.data_dir)
    handle = load_plugin("agent", "SVIDStore", "gcp_secretmanager", plugin_data, core)
    assert isinstance(handle, SvidStore)
    return handle


def put(handle: SvidStore, ca: TestCa, metadata: Sequence[str]) -> None:
    handle.put_x509_svid(ca.svid("/db"), ca.bundle(), {}, metadata)


def foreign_secret(fake: FakeSecretManager, name: str, labels: dict[str, str]) -> None:
    """A secret someone else created, with one version."""
    fake.create_secret(secret_name(name), labels, b"not an SVID")


def operations(fake: FakeSecretManager) -> list[str]:
    return [operation for operation, _, _ in fake.calls]


@pytest.fixture
def ca() -> TestCa:
    return TestCa.create(TEST_TRUST_DOMAIN)


def test_the_secret_is_created_labelled_and_holds_spire_s_document(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    svid, bundle = ca.svid("/db"), ca.bundle()
    partner = TestCa.create(PARTNER).bundle()
    store(tmp_path, gsm_plugin_data).put_x509_svid(svid, bundle, {PARTNER: partner}, DB)

    secret = secret_manager.secrets[secret_name("db")]
    assert secret.labels == {"spire-svid": LABEL}
    assert secret.replication == {"automatic": {}}
    assert secret.bindings == [], "no role or service account: the inherited policy"
    assert secret_manager.latest_payload(secret.name) == secret_document(svid, bundle, {PARTNER: partner})
    document = stored_document(reader(secret_manager, tmp_path / "reader"), "db")
    assert document is not None
    assert list(document) == ["spiffeID", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles"]
    assert document["spiffeID"] == "spiffe://example.org/db"
    assert operations(secret_manager) == ["get", "create", "addVersion", "access"], "the plugin never reads"


def test_each_put_adds_a_version_to_the_same_secret(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path, gsm_plugin_data)
    put(handle, ca, DB)
    rotated = ca.svid("/db")
    handle.put_x509_svid(rotated, ca.bundle(), {}, DB)
    secret = secret_manager.secrets[secret_name("db")]
    assert len(secret.versions) == 2
    assert json.loads(secret.versions[-1].data)["x509SVID"] == rotated.marshal()[0].decode()
    assert operations(secret_manager)[3:] == ["get", "addVersion"], "an existing secret is not created again"


def test_the_label_is_the_sha1_of_the_trust_domain_name(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path
) -> None:
    ca = TestCa.create(TrustDomain("prod.acme.com"))
    put(store(tmp_path, gsm_plugin_data, trust_domain="prod.acme.com"), ca, DB)
    label = secret_manager.secrets[secret_name("db")].labels["spire-svid"]
    assert label == hashlib.sha1(b"prod.acme.com").hexdigest()


@pytest.mark.parametrize(
    "labels",
    [{}, {"team": "payroll"}, {"spire-svid": hashlib.sha1(b"other.org").hexdigest()}, {"spire-svid": "true"}],
    ids=["unlabelled", "other-labels", "another-trust-domain", "aws-style"],
)
def test_a_secret_this_deployment_did_not_create_is_never_written_or_deleted(
    secret_manager: FakeSecretManager,
    gsm_plugin_data: dict[str, Any],
    tmp_path: Path,
    ca: TestCa,
    labels: dict[str, str],
) -> None:
    foreign_secret(secret_manager, "db", labels)
    handle = store(tmp_path, gsm_plugin_data)
    with pytest.raises(InvalidArgument, match=P + "secret is not managed by this SPIRE deployment$"):
        put(handle, ca, [*DB, f"role:{ACCESSOR}", f"serviceaccount:{SA}"])
    with pytest.raises(InvalidArgument, match=P + "secret is not managed by this SPIRE deployment$"):
        handle.delete_x509_svid(DB)
    secret = secret_manager.secrets[secret_name("db")]
    assert [version.data for version in secret.versions] == [b"not an SVID"]
    assert secret.bindings == []
    assert operations(secret_manager) == ["get", "get"]


def test_a_new_secret_gets_the_single_binding_asked_for(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    put(store(tmp_path, gsm_plugin_data), ca, [*DB, f"role:{ACCESSOR}", f"serviceaccount:{SA}"])
    secret = secret_manager.secrets[secret_name("db")]
    assert secret.bindings == [{"role": ACCESSOR, "members": [f"serviceAccount:{SA}"]}]
    assert operations(secret_manager) == ["get", "create", "setIamPolicy", "addVersion"]


def test_an_existing_secret_s_policy_is_set_only_when_it_differs(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path, gsm_plugin_data)
    metadata = [*DB, f"role:{ACCESSOR}", f"serviceaccount:{SA}"]
    put(handle, ca, metadata)
    secret_manager.calls.clear()

    put(handle, ca, metadata)  # the same single binding: left alone
    assert operations(secret_manager) == ["get", "getIamPolicy", "addVersion"]

    secret_manager.calls.clear()
    secret = secret_manager.secrets[secret_name("db")]
    secret.bindings.append({"role": "roles/secretmanager.admin", "members": ["user:mallory@example.com"]})
    put(handle, ca, metadata)  # a second binding was added by someone: replaced by the one asked for
    assert operations(secret_manager) == ["get", "getIamPolicy", "setIamPolicy", "addVersion"]
    assert secret.bindings == [{"role": ACCESSOR, "members": [f"serviceAccount:{SA}"]}]

    secret_manager.calls.clear()
    viewer = "roles/secretmanager.viewer"
    put(handle, ca, [*DB, f"role:{viewer}", f"serviceaccount:{SA}"])  # another role
    assert secret.bindings == [{"role": viewer, "members": [f"serviceAccount:{SA}"]}]

    other = "other@test-project.iam.gserviceaccount.com"
    put(handle, ca, [*DB, f"role:{viewer}", f"serviceaccount:{other}"])  # another member
    assert secret.bindings == [{"role": viewer, "members": [f"serviceAccount:{other}"]}]


def test_deletion_deletes_the_secret_with_its_etag(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path, gsm_plugin_data)
    put(handle, ca, DB)
    etag = secret_manager.secrets[secret_name("db")].etag
    handle.delete_x509_svid(DB)
    assert secret_name("db") not in secret_manager.secrets
    [(_, resource, query)] = [call for call in secret_manager.calls if call[0] == "delete"]
    assert resource == secret_name("db")
    assert query["etag"] == etag
    handle.delete_x509_svid(DB)  # nothing left to delete: not an error


def test_a_delete_refused_by_the_etag_is_an_error(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    """The secret changed between GetSecret and DeleteSecret: Secret Manager refuses, nothing is deleted."""
    handle = store(tmp_path, gsm_plugin_data)
    put(handle, ca, DB)
    secret_manager.update_after_get = True
    with pytest.raises(Internal, match=P + "failed to delete secret: 400 .*does not match the current etag"):
        handle.delete_x509_svid(DB)
    assert secret_name("db") in secret_manager.secrets


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (["projectid"], "invalid metadata: metadata does not contain a colon: 'projectid'"),
        (["projectid:test-project"], "name is required"),
        (["name:"], "name is required"),
        (["name:db"], "projectid is required"),
        (["name:db", "projectid:"], "projectid is required"),
        (["name:db/versions/1", "projectid:test-project"], "invalid metadata: name 'db/versions/1' is not a secret ID"),
        (["name:db.svid", "projectid:test-project"], "invalid metadata: name 'db.svid' is not a secret ID"),
        (
            ["name:db", "projectid:other/secrets/db"],
            "invalid metadata: projectid 'other/secrets/db' is not a project ID",
        ),
        ([*DB, f"serviceaccount:{SA}"], "role is required when service account is set"),
        ([*DB, f"role:{ACCESSOR}"], "service account is required when role is set"),
        ([*DB, "region:us-east1"], 'invalid metadata: unknown selector "gcp_secretmanager:region"'),
        ([*DB, "name:other"], 'invalid metadata: two "gcp_secretmanager:name" selectors'),
    ],
)
def test_metadata_the_plugin_cannot_use_is_refused_and_nothing_is_called(
    secret_manager: FakeSecretManager,
    gsm_plugin_data: dict[str, Any],
    tmp_path: Path,
    ca: TestCa,
    metadata: list[str],
    reason: str,
) -> None:
    handle = store(tmp_path, gsm_plugin_data)
    with pytest.raises(InvalidArgument, match=P + f"{reason}"):
        put(handle, ca, metadata)
    with pytest.raises(InvalidArgument, match=P + f"{reason}"):
        handle.delete_x509_svid(metadata)
    assert secret_manager.calls == []
    assert secret_manager.secrets == {}


@pytest.mark.parametrize(
    ("failing", "status", "reason"),
    [
        ("get", 403, "failed to get secret: 403 "),
        ("create", 500, "failed to create secret: 500 "),
        ("setIamPolicy", 400, "failed to set IAM policy to secret: 400 "),
        ("addVersion", 429, "failed to add secret version: 429 "),
    ],
)
def test_google_refusals_are_reported_with_spire_s_prefixes(
    secret_manager: FakeSecretManager,
    gsm_plugin_data: dict[str, Any],
    tmp_path: Path,
    ca: TestCa,
    failing: str,
    status: int,
    reason: str,
) -> None:
    secret_manager.fail[failing] = status
    with pytest.raises(Internal, match=P + f"{reason}.*injected failure of {failing}"):
        put(store(tmp_path, gsm_plugin_data), ca, [*DB, f"role:{ACCESSOR}", f"serviceaccount:{SA}"])


def test_get_iam_policy_and_delete_refusals_are_reported_with_spire_s_prefixes(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path, gsm_plugin_data)
    metadata = [*DB, f"role:{ACCESSOR}", f"serviceaccount:{SA}"]
    put(handle, ca, metadata)
    secret_manager.fail["getIamPolicy"] = 403
    with pytest.raises(Internal, match=P + "failed to get IAM policy: 403 "):
        put(handle, ca, metadata)
    secret_manager.fail["delete"] = 403
    with pytest.raises(Internal, match=P + "failed to delete secret: 403 "):
        handle.delete_x509_svid(metadata)
    assert secret_name("db") in secret_manager.secrets


def test_an_unreachable_secret_manager_is_unavailable(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path, gsm_plugin_data | {"secret_manager_endpoint": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(Unavailable, match=P + "failed to get secret: "):
        put(handle, ca, DB)
    with pytest.raises(Unavailable, match=P + "failed to get secret: "):
        handle.delete_x509_svid(DB)


def test_credentials_secret_manager_does_not_know_are_refused(
    secret_manager: FakeSecretManager, gsm_plugin_data: dict[str, Any], tmp_path: Path, ca: TestCa
) -> None:
    """A service account key the fake never issued: its self-signed JWT does not verify."""
    stranger = FakeSecretManager()
    try:
        key_file = stranger.service_account_file(tmp_path)
    finally:
        stranger.stop()
    account = json.loads(key_file.read_text()) | {"token_uri": f"{secret_manager.url}/token-not-served"}
    key_file.write_text(json.dumps(account))
    handle = store(tmp_path, gsm_plugin_data | {"service_account_file": str(key_file)})
    with pytest.raises(Internal, match=P + "failed to get secret: "):
        put(handle, ca, DB)
    assert secret_manager.secrets == {}


@pytest.mark.parametrize(
    ("plugin_data", "key", "reason"),
    [
        (
            {"region": "us", "access_key_id": "x"},
            "access_key_id",
            "unknown configurations detected: access_key_id,region",
        ),
        (
            {"service_account_file": "/nonexistent/sa.json"},
            "service_account_file",
            "failed to create secretmanager client",
        ),
        (
            {"secret_manager_endpoint": "secretmanager.googleapis.com"},
            "secret_manager_endpoint",
            "must be an http:// or https:// URL",
        ),
    ],
)
def test_bad_configuration_is_refused_by_name(
    tmp_path: Path, plugin_data: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}": {reason}'):
        store(tmp_path, plugin_data)
    # validate refuses the same, with the same words, calling nothing.
    with pytest.raises(CatalogError, match=f'key "{key}": {reason}'):
        validate_plugin("agent", "SVIDStore", "gcp_secretmanager", plugin_data, make_core_config(tmp_path))


def test_a_valid_configuration_validates(gsm_plugin_data: dict[str, Any], tmp_path: Path) -> None:
    validate_plugin("agent", "SVIDStore", "gcp_secretmanager", gsm_plugin_data, make_core_config(tmp_path))
