"""aws_kms's behaviour against moto's KMS: SPIRE's names, rotation, policies, tags, disposal, errors."""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.plugin import HashAlgorithm, KeyType
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.logger import plugin_logger
from pyspire.plugin.testing import load_plugin, make_core_config, validate_plugin
from pyspire.spiffe import TrustDomain
from pyspire_aws_kms.naming import KeyNames
from pyspire_aws_kms.upkeep import KeyEntry, Upkeep

from tests.support.free_port import free_port
from tests.support.moto import ACCOUNT, MotoServer

REGION = "us-west-2"
SERVER_A = KeyNames("example.org", "server-a")


def kms() -> Any:
    return boto3.client("kms", region_name=REGION)


def aliases() -> dict[str, str]:
    """Every alias in the region and the key ID it names."""
    return {a["AliasName"]: a.get("TargetKeyId", "") for a in kms().list_aliases()["Aliases"]}


def key_state(arn: str) -> str:
    return str(kms().describe_key(KeyId=arn)["KeyMetadata"]["KeyState"])


def eventually(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class Loaded:
    """Plugins loaded during a test, all closed at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.handles: list[KeyManager] = []

    def __call__(self, trust_domain: str = "example.org", **plugin_data: Any) -> KeyManager:
        data = {"region": REGION, **plugin_data}
        if "key_identifier_value" not in data:
            data.setdefault("key_identifier_file", str(self.tmp_path / "server_id"))
        handle = load_plugin(
            "server", "KeyManager", "aws_kms", data, make_core_config(self.tmp_path / "data", TrustDomain(trust_domain))
        )
        assert isinstance(handle, KeyManager)
        self.handles.append(handle)
        return handle


@pytest.fixture
def load(aws: MotoServer, tmp_path: Path) -> Iterator[Loaded]:
    loaded = Loaded(tmp_path)
    yield loaded
    for handle in loaded.handles:
        handle.close()


def test_keys_get_spires_alias_and_description(load: Loaded, tmp_path: Path) -> None:
    manager = load()
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.generate_key("jwt.key+1", KeyType.EC_P256)
    server_id = (tmp_path / "server_id").read_text()
    assert str(uuid.UUID(server_id)) == server_id
    assert stat.S_IMODE((tmp_path / "server_id").stat().st_mode) == 0o600
    prefix = f"alias/SPIRE_SERVER/example_org/{server_id}/"
    assert {prefix + "x509-CA-A", prefix + "jwt_2ekey_2b1"} <= set(aliases())
    target = aliases()[prefix + "x509-CA-A"]
    metadata = kms().describe_key(KeyId=target)["KeyMetadata"]
    assert metadata["Description"] == "SPIRE_SERVER_KEY/example_org/x509-CA-A"
    assert metadata["KeyUsage"] == "SIGN_VERIFY"
    assert metadata["KeySpec"] == "ECC_NIST_P256"


def test_a_reloaded_plugin_finds_its_keys_and_signs_with_them(load: Loaded) -> None:
    first = load()
    made = first.generate_key("x509-CA-A", KeyType.EC_P384)
    first.close()
    again = load()
    assert again.get_public_key("x509-CA-A") == made
    data = b"after restart" * 1000  # more than KMS's 4096 bytes of RAW: the digest is sent
    signature = again.sign_data("x509-CA-A", data, HashAlgorithm.SHA384)
    public = made.load()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, data, ec.ECDSA(hashes.SHA384()))


def test_the_public_key_is_the_one_kms_holds(load: Loaded) -> None:
    made = load(key_identifier_value="server-a").generate_key("k", KeyType.RSA_2048)
    target = aliases()[SERVER_A.alias("k")]
    assert kms().get_public_key(KeyId=target)["PublicKey"] == made.der


def test_rotation_points_the_alias_at_a_new_key_and_deletes_the_old_one(load: Loaded) -> None:
    manager = load(key_identifier_value="server-a")
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    alias = "alias/SPIRE_SERVER/example_org/server-a/x509-CA-A"
    old = kms().describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    rotated = manager.generate_key("x509-CA-A", KeyType.EC_P256)
    new = kms().describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    assert new != old
    assert kms().get_public_key(KeyId=new)["PublicKey"] == rotated.der
    eventually(lambda: key_state(old) == "PendingDeletion")
    assert key_state(new) == "Enabled"


def test_servers_with_other_ids_do_not_see_each_others_keys(load: Loaded) -> None:
    a = load(key_identifier_value="server-a")
    a_key = a.generate_key("x509-CA-A", KeyType.EC_P256)
    b = load(key_identifier_value="server-b")
    assert not b.get_public_keys()
    b.generate_key("x509-CA-A", KeyType.EC_P256)
    other_domain = load(trust_domain="example.com", key_identifier_value="server-a")
    assert not other_domain.get_public_keys()
    assert load(key_identifier_value="server-a").get_public_key("x509-CA-A") == a_key


def test_the_key_policy_file_is_applied(load: Loaded, tmp_path: Path) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "custom", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
        ],
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    manager = load(key_identifier_value="server-a", key_policy_file=str(tmp_path / "policy.json"))
    manager.generate_key("k", KeyType.EC_P256)
    target = aliases()[SERVER_A.alias("k")]
    assert json.loads(kms().get_key_policy(KeyId=target, PolicyName="default")["Policy"]) == policy


def test_the_default_policy_names_the_assumed_role(load: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    role = "spire-server"
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    assumed = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="server"
    )["Credentials"]
    manager = load(
        key_identifier_value="server-a",
        access_key_id=assumed["AccessKeyId"],
        secret_access_key=assumed["SecretAccessKey"],
    )
    manager.generate_key("k", KeyType.EC_P256)
    target = aliases()[SERVER_A.alias("k")]
    statements = json.loads(kms().get_key_policy(KeyId=target, PolicyName="default")["Policy"])["Statement"]
    assert statements[0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{role}"}
    assert statements[0]["Action"] == "kms:*"
    assert statements[1]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}


def test_key_tags_are_added_to_new_keys(load: Loaded) -> None:
    manager = load(key_identifier_value="server-a", key_tags={"Environment": "production", "Team": "security"})
    manager.generate_key("k", KeyType.EC_P256)
    target = aliases()[SERVER_A.alias("k")]
    tags = {t["TagKey"]: t["TagValue"] for t in kms().list_resource_tags(KeyId=target)["Tags"]}
    assert tags == {"Environment": "production", "Team": "security"}


def test_a_disabled_key_behind_an_alias_stops_the_plugin(load: Loaded) -> None:
    manager = load(key_identifier_value="server-a")
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    kms().disable_key(KeyId=aliases()[SERVER_A.alias("x509-CA-A")])
    with pytest.raises(CatalogError, match="found disabled SPIRE key"):
        load(key_identifier_value="server-a")


def test_unreachable_kms_is_one_clear_error(load: Loaded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CatalogError) as raised:
        load()
    message = str(raised.value)
    assert "keymanager(aws_kms): failed to fetch aliases: cannot reach AWS" in message
    assert message.count("\n") == 0


@pytest.mark.parametrize(
    ("plugin_data", "refusal"),
    [
        ({"key_identifier_value": "a"}, 'key "region"'),
        ({"region": REGION}, 'key "key_identifier_file"'),
        ({"region": REGION, "key_identifier_value": "a", "key_identifier_file": "f"}, "exclude each other"),
        ({"region": REGION, "key_identifier_value": "a.b"}, "only alphanumeric"),
        ({"region": REGION, "key_identifier_value": "alias/aws/x"}, "alias/aws/"),
        ({"region": REGION, "key_identifier_value": "a" * 257}, "256"),
        ({"region": REGION, "key_identifier_value": "a", "access_key_id": "AKIA"}, 'key "secret_access_key"'),
        ({"region": REGION, "key_identifier_value": "a", "key_tags": {"spire-x": "1"}}, "reserved prefix"),
        ({"region": REGION, "key_identifier_value": "a", "key_tags": {"aws:x": "1"}}, "reserved prefix"),
        ({"region": REGION, "key_identifier_value": "a", "key_tags": {"a": "b!"}}, "characters"),
        ({"region": REGION, "key_identifier_value": "a", "key_policy_file": "/nonexistent"}, "cannot read"),
        (
            {"region": REGION, "key_identifier_value": "a", "enable_tag_based_key_discovery": True},
            'key "enable_tag_based_key_discovery"',
        ),
    ],
)
def test_bad_configuration_is_refused_by_name(
    tmp_path: Path, plugin_data: dict[str, Any], refusal: str, aws: MotoServer
) -> None:
    with pytest.raises(CatalogError, match=refusal):
        validate_plugin("server", "KeyManager", "aws_kms", plugin_data, make_core_config(tmp_path))


def test_a_server_id_file_without_a_uuid_is_refused_not_replaced(load: Loaded, tmp_path: Path) -> None:
    (tmp_path / "server_id").write_text("not a uuid")
    with pytest.raises(CatalogError, match="does not hold a server ID"):
        load()
    assert (tmp_path / "server_id").read_text() == "not a uuid"


@pytest.fixture
def upkeep(aws: MotoServer) -> Iterator[Upkeep]:
    """The upkeep of server "server-b" of example.org, with nothing cached."""
    tasks = Upkeep(kms(), KeyNames("example.org", "server-b"), list, plugin_logger("KeyManager", "aws_kms"))
    tasks.start()
    yield tasks
    tasks.stop()


def test_another_servers_stale_alias_and_key_are_disposed_of(load: Loaded, upkeep: Upkeep) -> None:
    load(key_identifier_value="server-a").generate_key("x509-CA-A", KeyType.EC_P256)
    load(key_identifier_value="server-b").generate_key("x509-CA-A", KeyType.EC_P256)
    load(trust_domain="example.org2", key_identifier_value="server-c").generate_key("x509-CA-A", KeyType.EC_P256)
    stale_alias = "alias/SPIRE_SERVER/example_org/server-a/x509-CA-A"
    stale_key = kms().describe_key(KeyId=stale_alias)["KeyMetadata"]["Arn"]

    upkeep.dispose_stale_aliases(datetime.now(UTC) + timedelta(days=13))
    assert stale_alias in aliases()

    upkeep.dispose_stale_aliases(datetime.now(UTC) + timedelta(days=15))
    assert stale_alias not in aliases()
    eventually(lambda: key_state(stale_key) == "PendingDeletion")
    # Its own alias and another trust domain's (even one whose name extends this one) stay.
    assert "alias/SPIRE_SERVER/example_org/server-b/x509-CA-A" in aliases()
    assert "alias/SPIRE_SERVER/example_org2/server-c/x509-CA-A" in aliases()


def test_keys_without_an_alias_are_disposed_of_after_48_hours(aws: MotoServer, upkeep: Upkeep) -> None:
    def create(description: str) -> str:
        return str(
            kms().create_key(Description=description, KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"][
                "Arn"
            ]
        )

    orphan = create("SPIRE_SERVER_KEY/example_org/x509-CA-A")
    named = create("SPIRE_SERVER_KEY/example_org/x509-CA-B")
    kms().create_alias(AliasName="alias/SPIRE_SERVER/example_org/server-a/x509-CA-B", TargetKeyId=named)
    other_domain = create("SPIRE_SERVER_KEY/example_org2/x509-CA-A")
    unrelated = create("someone else's key")

    upkeep.dispose_orphaned_keys(datetime.now(UTC) + timedelta(hours=47))
    upkeep.dispose_orphaned_keys(datetime.now(UTC) + timedelta(hours=49))
    eventually(lambda: key_state(orphan) == "PendingDeletion")
    assert {key_state(arn) for arn in (named, other_domain, unrelated)} == {"Enabled"}


def test_refreshing_aliases_moves_their_date_but_never_reverts_a_rotation(load: Loaded) -> None:
    manager = load(key_identifier_value="server-a")
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.generate_key("x509-CA-B", KeyType.EC_P256)
    a, b = (f"alias/SPIRE_SERVER/example_org/server-a/x509-CA-{slot}" for slot in "AB")

    def updated(alias: str) -> datetime:
        return next(x["LastUpdatedDate"] for x in kms().list_aliases()["Aliases"] if x["AliasName"] == alias)

    before = {alias: updated(alias) for alias in (a, b)}
    b_before_rotation = kms().describe_key(KeyId=b)["KeyMetadata"]["Arn"]
    # A replica sharing the server ID rotated B meanwhile.
    replica_key = kms().create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    kms().update_alias(AliasName=b, TargetKeyId=replica_key)
    moved = updated(b)
    time.sleep(0.01)
    cached = [KeyEntry(kms().describe_key(KeyId=a)["KeyMetadata"]["Arn"], a), KeyEntry(b_before_rotation, b)]
    Upkeep(kms(), SERVER_A, lambda: cached, plugin_logger("KeyManager", "aws_kms")).refresh_aliases()
    assert updated(a) > before[a]
    assert updated(b) == moved
    assert aliases()[b] == replica_key
