"""gcp_kms's own behaviour against the fake Cloud KMS: SPIRE's names and labels, rotation, refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyspire.plugin import HashAlgorithm, Internal, InvalidArgument, KeyType
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.testing.loading import load_plugin, make_core_config, validate_plugin

from tests.support.gcp_kms import FakeKms

KEY_RING = "projects/test-project/locations/us-east1/keyRings/spire"


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Any]:
    loaded: list[KeyManager] = []

    def _load(plugin_data: dict[str, Any]) -> KeyManager:
        handle = load_plugin("server", "KeyManager", "gcp_kms", plugin_data, make_core_config(tmp_path / "data"))
        assert isinstance(handle, KeyManager)
        loaded.append(handle)
        return handle

    yield _load
    for handle in loaded:
        handle.close()


def _server_keys(kms: FakeKms, server_id: str) -> list[Any]:
    return [key for key in kms.keys.values() if key.labels.get("spire-server-id") == server_id]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"key_ring": ""}, "key_ring"),
        ({"key_ring": "projects/p/keyRings/r"}, "key_ring"),
        ({"key_identifier_value": "fixed"}, "key_identifier_value"),
        ({"key_identifier_file": "", "key_identifier_value": "Not.A.Label"}, "key_identifier_value"),
        ({"key_identifier_file": ""}, "key_identifier_file"),
        ({"kms_endpoint": "ftp://x"}, "kms_endpoint"),
        ({"service_account_file": "/nonexistent/sa.json"}, "service_account_file"),
        ({"shared_keys": {"crypto_key_template": "x"}}, "shared_keys"),
    ],
)
def test_bad_config_is_refused_by_name(
    gcp_plugin_data: dict[str, Any], tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    with pytest.raises(CatalogError, match=named):
        validate_plugin("server", "KeyManager", "gcp_kms", gcp_plugin_data | change, make_core_config(tmp_path))


def test_keys_carry_spire_names_and_labels(kms: FakeKms, gcp_plugin_data: dict[str, Any], load: Any) -> None:
    load(gcp_plugin_data).generate_key("x509-CA-A", KeyType.EC_P256)
    server_id = Path(gcp_plugin_data["key_identifier_file"]).read_text()
    (key,) = _server_keys(kms, server_id)
    key_id = key.name.rsplit("/", 1)[-1]
    assert key.name.startswith(f"{KEY_RING}/cryptoKeys/spire-key-")
    assert key_id.endswith("-x509-CA-A")
    assert len(key_id) == len("spire-key-") + 36 + len("-x509-CA-A")
    assert key.labels == {
        "spire-server-td": hashlib.sha1(b"example.org").hexdigest(),
        "spire-server-id": server_id,
        "spire-active": "true",
    }
    assert key.algorithm == "EC_SIGN_P256_SHA256"
    # The default policy: the authenticated service account may sign and verify.
    assert key.policy["bindings"] == [
        {"role": "roles/cloudkms.signerVerifier",
         "members": ["serviceAccount:spire-server@test-project.iam.gserviceaccount.com"]}
    ]  # fmt: skip


def test_rotation_adds_a_version_and_destroys_the_replaced_one(
    kms: FakeKms, gcp_plugin_data: dict[str, Any], load: Any
) -> None:
    manager = load(gcp_plugin_data)
    first = manager.generate_key("JWT-Signer-A", KeyType.EC_P256)
    second = manager.generate_key("JWT-Signer-A", KeyType.EC_P384)
    assert first.der != second.der
    assert second.type is KeyType.EC_P384
    (key,) = _server_keys(kms, Path(gcp_plugin_data["key_identifier_file"]).read_text())
    assert [version.state for version in key.versions] == ["DESTROY_SCHEDULED", "ENABLED"]
    assert key.algorithm == "EC_SIGN_P384_SHA384"
    assert load(gcp_plugin_data).get_public_key("JWT-Signer-A") == second


def test_key_policy_file_is_set_on_new_keys(
    kms: FakeKms, gcp_plugin_data: dict[str, Any], load: Any, tmp_path: Path
) -> None:
    policy = {"version": 3, "bindings": [{"role": "roles/cloudkms.viewer", "members": ["user:ops@example.org"]}]}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    load(gcp_plugin_data | {"key_policy_file": str(tmp_path / "policy.json")}).generate_key("k", KeyType.EC_P256)
    (key,) = _server_keys(kms, Path(gcp_plugin_data["key_identifier_file"]).read_text())
    assert key.policy["bindings"] == policy["bindings"]


def test_a_policy_file_that_is_not_v3_is_refused(gcp_plugin_data: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text(json.dumps({"bindings": []}))
    with pytest.raises(CatalogError, match="key_policy_file"):
        validate_plugin("server", "KeyManager", "gcp_kms",
                        gcp_plugin_data | {"key_policy_file": str(tmp_path / "policy.json")},
                        make_core_config(tmp_path))  # fmt: skip


def test_other_servers_keys_are_not_taken(gcp_plugin_data: dict[str, Any], load: Any) -> None:
    load(gcp_plugin_data | {"key_identifier_file": "", "key_identifier_value": "server-a"}).generate_key(
        "x509-CA-A", KeyType.EC_P256
    )
    other = load(gcp_plugin_data | {"key_identifier_file": "", "key_identifier_value": "server-b"})
    assert other.get_public_key("x509-CA-A") is None


def test_rsa_signs_pkcs1_sha256_and_refuses_pss(gcp_plugin_data: dict[str, Any], load: Any) -> None:
    manager = load(gcp_plugin_data)
    public = manager.generate_key("rsa", KeyType.RSA_2048)
    signature = manager.sign_data("rsa", b"data", HashAlgorithm.SHA256, rsa_pss=False)
    key = serialization.load_der_public_key(public.der)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidArgument, match="RSASSA-PKCS1-v1_5"):
        manager.sign_data("rsa", b"data", HashAlgorithm.SHA256, rsa_pss=True)
    with pytest.raises(InvalidArgument, match="sha384"):
        manager.sign_data("rsa", b"data", HashAlgorithm.SHA384, rsa_pss=False)


def test_a_corrupted_signature_is_refused(kms: FakeKms, gcp_plugin_data: dict[str, Any], load: Any) -> None:
    manager = load(gcp_plugin_data)
    manager.generate_key("k", KeyType.EC_P256)
    kms.corrupt_signatures = True
    with pytest.raises(Internal, match="corrupted"):
        manager.sign_data("k", b"data", HashAlgorithm.SHA256, rsa_pss=False)


def test_an_api_error_signs_nothing_and_keeps_the_old_key(
    kms: FakeKms, gcp_plugin_data: dict[str, Any], load: Any
) -> None:
    manager = load(gcp_plugin_data)
    before = manager.generate_key("k", KeyType.EC_P256)
    kms.fail["asymmetricSign"] = 500  # 503 is retried by the client for a minute
    with pytest.raises(Internal, match="failed to sign"):
        manager.sign_data("k", b"data", HashAlgorithm.SHA256, rsa_pss=False)
    kms.fail = {"create": 500}
    with pytest.raises(Internal, match="failed to generate key"):
        manager.generate_key("k", KeyType.EC_P256)
    assert manager.get_public_key("k") == before


def test_an_unknown_key_ring_stops_configure(gcp_plugin_data: dict[str, Any], load: Any) -> None:
    with pytest.raises(CatalogError, match="failed to list SPIRE Server keys"):
        load(gcp_plugin_data | {"key_ring": "projects/test-project/locations/us-east1/keyRings/missing"})
