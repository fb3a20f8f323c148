"""awssecret's behaviour against moto's Secrets Manager: what it signs under, and what it refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import TEST_TRUST_DOMAIN, load_plugin, make_core_config, make_csr, validate_plugin

from plugins.awssecret.tests.upstream_ca import REGION, UpstreamSecrets, pem, put_secret
from tests.support.free_port import free_port
from tests.support.moto import MotoServer
from tests.support.pki import make_ca


def load(plugin_data: dict[str, Any], tmp_path: Path) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "awssecret", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def test_an_intermediate_signs_under_the_bundles_root(secrets_ca: UpstreamSecrets, tmp_path: Path) -> None:
    minted = load(secrets_ca.plugin_data(), tmp_path).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert minted.ca_chain[1:] == (secrets_ca.intermediate.certificate,)
    assert minted.upstream_roots == (secrets_ca.root.certificate,)
    minted.ca_chain[0].verify_directly_issued_by(secrets_ca.intermediate.certificate)


def test_a_self_signed_ca_needs_no_bundle(aws: MotoServer, tmp_path: Path) -> None:
    root = make_ca(name="self-signed upstream")
    certificate, key = pem(root)
    data = {"region": REGION, "cert_file_arn": put_secret("c", certificate), "key_file_arn": put_secret("k", key)}
    minted = load(data, tmp_path).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert len(minted.ca_chain) == 1
    assert minted.upstream_roots == (root.certificate,)


def test_the_ca_never_outlives_the_upstream(aws: MotoServer, tmp_path: Path) -> None:
    root = make_ca(name="short-lived upstream", lifetime=timedelta(hours=2))
    certificate, key = pem(root)
    data = {"region": REGION, "cert_file_arn": put_secret("c", certificate), "key_file_arn": put_secret("k", key)}
    minted = load(data, tmp_path).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(days=1))
    assert minted.ca_chain[0].not_valid_after_utc == root.certificate.not_valid_after_utc


def refused(plugin_data: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(CatalogError) as raised:
        load(plugin_data, tmp_path)
    message = str(raised.value)
    assert message.startswith('plugins: UpstreamAuthority "awssecret": ')
    assert "\n" not in message
    return message


def test_an_intermediate_without_a_bundle_is_refused(secrets_ca: UpstreamSecrets, tmp_path: Path) -> None:
    data = {**secrets_ca.plugin_data(), "bundle_file_arn": ""}
    assert "only self-signed CAs are supported" in refused(data, tmp_path)
    two = put_secret("two", pem(secrets_ca.intermediate)[0] + pem(secrets_ca.root)[0])
    assert "only self-signed CAs are supported" in refused({**data, "cert_file_arn": two}, tmp_path)


def test_a_key_of_another_certificate_is_refused(secrets_ca: UpstreamSecrets, tmp_path: Path) -> None:
    data = {**secrets_ca.plugin_data(), "key_file_arn": put_secret("other-key", pem(make_ca())[1])}
    assert "certificate and private key do not match" in refused(data, tmp_path)


def test_a_bundle_the_certificate_does_not_chain_to_is_refused(secrets_ca: UpstreamSecrets, tmp_path: Path) -> None:
    data = {**secrets_ca.plugin_data(), "bundle_file_arn": put_secret("other-root", pem(make_ca())[0])}
    assert "could not be validated with the provided bundle" in refused(data, tmp_path)


def test_secrets_that_are_missing_or_not_pem_are_refused_naming_them(
    secrets_ca: UpstreamSecrets, tmp_path: Path
) -> None:
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:nowhere"
    message = refused({**secrets_ca.plugin_data(), "key_file_arn": missing}, tmp_path)
    assert f"unable to read {missing}: ResourceNotFoundException" in message
    garbage = put_secret("garbage", "not a PEM certificate")
    assert "holds no readable PEM certificate" in refused(
        {**secrets_ca.plugin_data(), "cert_file_arn": garbage}, tmp_path
    )
    binary = boto3.client("secretsmanager", region_name=REGION).create_secret(Name="bin", SecretBinary=b"\x00")["ARN"]
    assert "has no SecretString" in refused({**secrets_ca.plugin_data(), "key_file_arn": binary}, tmp_path)


def test_unreachable_secrets_manager_is_one_clear_error(
    secrets_ca: UpstreamSecrets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    message = refused(secrets_ca.plugin_data(), tmp_path)
    assert f"upstreamauthority(awssecret): unable to read {secrets_ca.key_file_arn}: cannot reach AWS" in message


def test_static_and_assumed_role_credentials_read_the_secrets(secrets_ca: UpstreamSecrets, tmp_path: Path) -> None:
    static = {**secrets_ca.plugin_data(), "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s", "secret_token": "t"}
    load(static, tmp_path).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    role = boto3.client("iam", region_name=REGION).create_role(RoleName="ca-reader", AssumeRolePolicyDocument="{}")
    assumed = {**secrets_ca.plugin_data(), "assume_role_arn": role["Role"]["Arn"]}
    load(assumed, tmp_path).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))


@pytest.mark.parametrize(
    ("plugin_data", "refusal"),
    [
        ({"key_file_arn": "k"}, 'key "cert_file_arn"'),
        ({"cert_file_arn": "c"}, 'key "key_file_arn"'),
        ({"cert_file_arn": "c", "key_file_arn": "k", "access_key_id": "a"}, 'key "secret_access_key"'),
        ({"cert_file_arn": "c", "key_file_arn": "k", "secret_access_key": "s"}, 'key "access_key_id"'),
        ({"cert_file_arn": "c", "key_file_arn": "k", "secret_token": "t"}, 'key "secret_token"'),
    ],
)
def test_bad_configuration_is_refused_by_name(plugin_data: dict[str, Any], refusal: str, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=refusal):
        validate_plugin("server", "UpstreamAuthority", "awssecret", plugin_data, make_core_config(tmp_path))
