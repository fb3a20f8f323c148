"""aws_secretsmanager against moto: SPIRE's secret document, tag, selectors, deletion and refusals."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.plugin.errors import CatalogError, Internal, InvalidArgument, Unavailable
from pyspire.plugin.facades import SvidStore
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import TrustDomain

from plugins.aws_secretsmanager.tests.stored import REGION, described, secrets_manager, stored_document
from tests.support.free_port import free_port
from tests.support.moto import ACCOUNT, MotoServer

PARTNER = TrustDomain("partner.test")


def store(tmp_path: Path, **plugin_data: str) -> SvidStore:
    handle = load_plugin(
        "agent", "SVIDStore", "aws_secretsmanager", {"region": REGION, **plugin_data}, make_core_config(tmp_path)
    )
    assert isinstance(handle, SvidStore)
    return handle


def put(handle: SvidStore, ca: TestCa, metadata: Sequence[str], federated: bool = False) -> None:
    bundles = {PARTNER: TestCa.create(PARTNER).bundle()} if federated else {}
    handle.put_x509_svid(ca.svid("/db"), ca.bundle(), bundles, metadata)


def foreign_secret(name: str, tags: Sequence[Mapping[str, str]] = ()) -> str:
    """A secret someone else created: its ARN."""
    created = secrets_manager().create_secret(Name=name, SecretString="not an SVID", Tags=list(tags))
    return str(created["ARN"])


@pytest.fixture
def ca() -> TestCa:
    return TestCa.create(TEST_TRUST_DOMAIN)


def test_the_secret_is_spire_s_document_as_secret_binary(aws: MotoServer, tmp_path: Path, ca: TestCa) -> None:
    svid, bundle = ca.svid("/db"), ca.bundle()
    partner = TestCa.create(PARTNER).bundle()
    store(tmp_path).put_x509_svid(svid, bundle, {PARTNER: partner}, ["secretname:db"])

    raw = secrets_manager().get_secret_value(SecretId="db")["SecretBinary"]
    chain, key = svid.marshal()
    assert json.loads(raw) == {
        "spiffeID": "spiffe://example.org/db",
        "x509SVID": chain.decode(),
        "x509SVIDKey": key.decode(),
        "bundle": bundle.marshal_x509_pem().decode(),
        "federatedBundles": {"spiffe://partner.test": partner.marshal_x509_pem().decode()},
    }
    # Go's encoder: compact, in the struct's field order.
    assert raw.startswith(b'{"spiffeID":"spiffe://example.org/db","x509SVID":"-----BEGIN CERTIFICATE-----\\n')
    assert list(json.loads(raw)) == ["spiffeID", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles"]
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS #8
    assert serialization.load_pem_private_key(key, None) is not None


def test_federated_bundles_are_left_out_when_there_are_none(aws: MotoServer, tmp_path: Path, ca: TestCa) -> None:
    put(store(tmp_path), ca, ["secretname:db"])
    document = stored_document("db")
    assert document is not None
    assert "federatedBundles" not in document


def test_a_new_secret_is_tagged_spire_svid_and_encrypted_with_the_kms_key_named(
    aws: MotoServer, tmp_path: Path, ca: TestCa
) -> None:
    put(store(tmp_path), ca, ["secretname:db", "kmskeyid:alias/svids"])
    description = described("db")
    assert description is not None
    assert {"Key": "spire-svid", "Value": "true"} in description["Tags"]
    assert description["KmsKeyId"] == "alias/svids"


def test_an_existing_secret_without_the_tag_is_never_overwritten_or_deleted(
    aws: MotoServer, tmp_path: Path, ca: TestCa
) -> None:
    foreign_secret("payroll-db-password", [{"Key": "team", "Value": "payroll"}])
    handle = store(tmp_path)
    with pytest.raises(InvalidArgument, match="secret does not contain the 'spire-svid' tag"):
        put(handle, ca, ["secretname:payroll-db-password"])
    with pytest.raises(InvalidArgument, match="secret does not contain the 'spire-svid' tag"):
        handle.delete_x509_svid(["secretname:payroll-db-password"])
    assert secrets_manager().get_secret_value(SecretId="payroll-db-password")["SecretString"] == "not an SVID"
    assert (described("payroll-db-password") or {}).get("DeletedDate") is None


def test_a_secret_named_by_its_arn_is_updated(aws: MotoServer, tmp_path: Path, ca: TestCa) -> None:
    handle = store(tmp_path)
    put(handle, ca, ["secretname:db"])
    arn = (described("db") or {})["ARN"]
    rotated = ca.svid("/db")
    handle.put_x509_svid(rotated, ca.bundle(), {}, [f"arn:{arn}"])
    assert (stored_document("db") or {})["x509SVID"] == rotated.marshal()[0].decode()


def test_a_secret_is_created_by_name_only(aws: MotoServer, tmp_path: Path, ca: TestCa) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:absent-AbCdEf"
    with pytest.raises(InvalidArgument, match="failed to create secret: name selector is required"):
        put(store(tmp_path), ca, [f"arn:{arn}"])


def test_deletion_schedules_the_secret_for_deletion_with_spire_s_recovery_window(
    aws: MotoServer, tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path)
    put(handle, ca, ["secretname:db"])
    handle.delete_x509_svid(["secretname:db"])
    description = described("db")
    assert description is not None, "scheduled, not removed at once"
    # DescribeSecret's DeletedDate is when the deletion happens: after the 7-day recovery window.
    window = description["DeletedDate"] - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < window <= timedelta(days=7)
    handle.delete_x509_svid(["secretname:db"])  # a second round: already scheduled, not an error
    assert described("db") is not None


def test_a_secret_scheduled_for_deletion_is_restored_when_its_svid_is_put_again(
    aws: MotoServer, tmp_path: Path, ca: TestCa
) -> None:
    handle = store(tmp_path)
    put(handle, ca, ["secretname:db"])
    handle.delete_x509_svid(["secretname:db"])
    svid = ca.svid("/db")
    handle.put_x509_svid(svid, ca.bundle(), {}, ["secretname:db"])
    assert (described("db") or {}).get("DeletedDate") is None
    assert (stored_document("db") or {})["x509SVID"] == svid.marshal()[0].decode()


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (["secretname"], "failed to parse Metadata: metadata does not contain a colon: 'secretname'"),
        (["secretname:db", "region:eu-west-1"], 'unknown selector "aws_secretsmanager:region"'),
        (["secretname:db", "secretname:other"], 'two "aws_secretsmanager:secretname" selectors'),
        (["kmskeyid:alias/svids"], "either the secret name or ARN is required"),
        (["secretname:"], "either the secret name or ARN is required"),
    ],
)
def test_metadata_the_plugin_cannot_use_is_refused_and_nothing_is_stored(
    aws: MotoServer, tmp_path: Path, ca: TestCa, metadata: list[str], reason: str
) -> None:
    handle = store(tmp_path)
    with pytest.raises(InvalidArgument, match=reason):
        put(handle, ca, metadata)
    with pytest.raises(InvalidArgument, match=reason):
        handle.delete_x509_svid(metadata)
    assert secrets_manager().list_secrets()["SecretList"] == []


def test_assume_role_arn_stores_in_the_role_s_account(aws: MotoServer, tmp_path: Path, ca: TestCa) -> None:
    """moto gives assumed-role credentials the account of the role: the secret lands there."""
    put(store(tmp_path, assume_role_arn="arn:aws:iam::111111111111:role/svid-writer"), ca, ["secretname:db"])
    assert secrets_manager().list_secrets()["SecretList"] == [], "nothing in the caller's own account"
    role = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn="arn:aws:iam::111111111111:role/reader", RoleSessionName="reader"
    )["Credentials"]
    other_account = boto3.client(
        "secretsmanager",
        region_name=REGION,
        aws_access_key_id=role["AccessKeyId"],
        aws_secret_access_key=role["SecretAccessKey"],
        aws_session_token=role["SessionToken"],
    )
    arn = other_account.describe_secret(SecretId="db")["ARN"]
    assert arn.startswith(f"arn:aws:secretsmanager:{REGION}:111111111111:secret:db-")


def test_an_unreachable_secrets_manager_is_a_clear_error(
    aws: MotoServer, tmp_path: Path, ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    handle = store(tmp_path)
    with pytest.raises(Unavailable, match="failed to describe secret: Could not connect to the endpoint URL"):
        put(handle, ca, ["secretname:db"])
    with pytest.raises(Unavailable, match="failed to describe secret"):
        handle.delete_x509_svid(["secretname:db"])


def test_missing_credentials_are_a_clear_error(
    aws: MotoServer, tmp_path: Path, ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(Internal, match="failed to describe secret: Unable to locate credentials"):
        put(store(tmp_path), ca, ["secretname:db"])
    put(store(tmp_path, access_key_id="AKIDEXAMPLE", secret_access_key="secret"), ca, ["secretname:db"])
    assert stored_document("db") is not None


@pytest.mark.parametrize(
    ("plugin_data", "key", "reason"),
    [
        ({"region": ""}, "region", "region is required"),
        ({"access_key_id": "AKIDEXAMPLE"}, "secret_access_key", "go together"),
        ({"secret_access_key": "secret"}, "access_key_id", "go together"),
        ({"assume_role_arn": "svid-writer"}, "assume_role_arn", "is not a role ARN"),
    ],
)
def test_bad_configuration_is_refused_by_name(
    tmp_path: Path, plugin_data: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}".*{reason}'):
        store(tmp_path, **plugin_data)


def test_region_is_required(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match='key "region": region is required'):
        load_plugin("agent", "SVIDStore", "aws_secretsmanager", {}, make_core_config(tmp_path))
