"""The server plugin, loaded as the daemon loads it, against moto's EC2, IAM, STS and Organizations."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain
from pyspire_aws_iid.document import RegionCertificates, verify_payload
from pyspire_aws_iid.signature import SignatureError, decode_signature, verified_content

from plugins.aws_iid.tests.fakes import (
    GENUINE,
    RegionSigner,
    RewrittenEc2,
    identity_document,
    launch_instance,
    payload,
)
from tests.support.moto import ACCOUNT, MotoServer

SHIPPED_REGIONS = sorted(
    json.loads(resources.files("pyspire_aws_iid").joinpath("region_certificates.json").read_text())
)


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("aws_iid never challenges")


def attestor(tmp_path: Path, signers: list[RegionSigner], **plugin_data: Any) -> ServerNodeAttestor:
    certificates = {signer.region: str(signer.write(tmp_path)) for signer in signers}
    handle = load_plugin(
        "server",
        "NodeAttestor",
        "aws_iid",
        {"region_certificates": certificates, **plugin_data},
        make_core_config(tmp_path),
    )
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def signed(signer: RegionSigner, instance_id: str, **document: str) -> bytes:
    text = identity_document(instance_id, region=signer.region, **document)
    return payload(text, signer.sign(text))


def attest(handle: ServerNodeAttestor, data: bytes) -> AttestationResult:
    return handle.attest(data, no_challenge)


def test_verified_instance_gets_spire_path_and_selectors(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    instance = launch_instance({"name": "blog", "team": "web", "spare": ""})
    result = attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, instance.instance_id))

    assert result.agent_path == f"/aws_iid/{ACCOUNT}/us-west-2/{instance.instance_id}"
    assert not result.can_reattest
    group_name = boto3.client("ec2", region_name="us-west-2").describe_security_groups(
        GroupIds=[instance.security_group_id]
    )["SecurityGroups"][0]["GroupName"]
    assert set(result.selector_values) == {
        f"account_id:{ACCOUNT}",
        "az:us-west-2a",
        "image:id:ami-12c6146b",
        f"instance:id:{instance.instance_id}",
        "region:us-west-2",
        "tag:name:blog",
        "tag:team:web",
        "tag:spare:",  # an empty value is a selector too, as in SPIRE
        f"sg:id:{instance.security_group_id}",
        f"sg:name:{group_name}",
        f"iamrole:{instance.role_arn}",
    }
    assert list(result.selector_values) == sorted(result.selector_values)


def test_instance_profile_selectors_can_be_disabled(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    instance = launch_instance()
    handle = attestor(tmp_path, [us_west_2], disable_instance_profile_selectors=True)
    values = attest(handle, signed(us_west_2, instance.instance_id)).selector_values
    assert not any(v.startswith("iamrole:") for v in values)


def test_agent_path_template_with_tags(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    instance = launch_instance({"cluster": "blue"})
    handle = attestor(tmp_path, [us_west_2], agent_path_template="/aws/{{ .Tags.cluster }}/{{ .InstanceID }}")
    assert attest(handle, signed(us_west_2, instance.instance_id)).agent_path == f"/aws/blue/{instance.instance_id}"


def test_a_traversing_tag_renders_a_path_the_server_refuses(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    instance = launch_instance({"cluster": ".."})
    handle = attestor(tmp_path, [us_west_2], agent_path_template="/aws/{{ .Tags.cluster }}/{{ .InstanceID }}")
    path = attest(handle, signed(us_west_2, instance.instance_id)).agent_path
    with pytest.raises(SpiffeIdError, match="dot"):
        SpiffeId.from_path(TrustDomain("example.org"), "/spire/agent" + path)


def test_template_needing_a_missing_tag_is_an_error(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    instance = launch_instance()
    handle = attestor(tmp_path, [us_west_2], agent_path_template="/aws/{{ .Tags.cluster }}")
    with pytest.raises(Internal, match=r"\.Tags\.cluster"):
        attest(handle, signed(us_west_2, instance.instance_id))


# --- what a forger might send ------------------------------------------------------------


def test_signature_by_another_key_is_refused(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    instance = launch_instance()
    forger = RegionSigner("us-west-2")
    with pytest.raises(InvalidArgument, match="does not verify"):
        attest(attestor(tmp_path, [us_west_2]), signed(forger, instance.instance_id))


def test_signature_by_another_regions_certificate_is_refused(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner, eu_west_1: RegionSigner
) -> None:
    instance = launch_instance()
    text = identity_document(instance.instance_id, region="us-west-2")
    with pytest.raises(InvalidArgument, match="does not verify"):
        attest(attestor(tmp_path, [us_west_2, eu_west_1]), payload(text, eu_west_1.sign(text)))


def test_document_swapped_under_a_valid_signature_is_refused(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    mine = launch_instance()
    victim = launch_instance()
    genuine = identity_document(mine.instance_id)
    forged = identity_document(victim.instance_id)
    with pytest.raises(InvalidArgument, match="does not match the signed document"):
        attest(attestor(tmp_path, [us_west_2]), payload(forged, us_west_2.sign(genuine)))


@pytest.mark.parametrize("cut", [1, 40, 200])
def test_truncated_signature_is_refused(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner, cut: int) -> None:
    instance = launch_instance()
    text = identity_document(instance.instance_id)
    der = base64.b64decode(us_west_2.sign(text))
    truncated = base64.b64encode(der[:-cut]).decode()
    with pytest.raises(InvalidArgument):
        attest(attestor(tmp_path, [us_west_2]), payload(text, truncated))


def test_legacy_rsa1024_signature_alone_is_refused(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    text = identity_document("i-0123456789abcdef0")
    with pytest.raises(InvalidArgument, match="only RSA-2048"):
        attest(attestor(tmp_path, [us_west_2]), payload(text, "", signature="c2lnbmF0dXJl"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"rsa2048": "AAAA"}).encode(), "no document"),
        (json.dumps({"document": "{}", "rsa2048": "AAAA"}).encode(), "no valid region"),
        (json.dumps({"document": '{"region": "us-west-2"}', "rsa2048": "***"}).encode(), "base64"),
        (json.dumps({"document": '{"region": "us-west-2"}', "rsa2048": "AAAA"}).encode(), "cannot be parsed"),
        (json.dumps({"document": "x" * 20000, "rsa2048": "AAAA"}).encode(), "larger than"),
        (json.dumps({"document": '{"region": "us-west-2"}', "rsa2048": "A" * 20000}).encode(), "larger than"),
    ],
)
def test_malformed_payloads_name_what_is_wrong(
    tmp_path: Path, us_west_2: RegionSigner, data: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        attest(attestor(tmp_path, [us_west_2]), data)


def test_unknown_region_is_refused(tmp_path: Path, us_west_2: RegionSigner) -> None:
    text = identity_document("i-0123456789abcdef0", region="xx-nowhere-9")
    with pytest.raises(InvalidArgument, match="no AWS certificate is known"):
        attest(attestor(tmp_path, [us_west_2]), payload(text, us_west_2.sign(text)))


def test_signed_document_with_a_malformed_account_is_refused(tmp_path: Path, us_west_2: RegionSigner) -> None:
    with pytest.raises(InvalidArgument, match="accountId"):
        attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, "i-0123456789abcdef0", account_id="12/../34"))


# --- what EC2 says -------------------------------------------------------------------------


def test_terminated_instance_is_refused(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    instance = launch_instance()
    boto3.client("ec2", region_name="us-west-2").terminate_instances(InstanceIds=[instance.instance_id])
    with pytest.raises(PermissionDenied, match="not pending or running"):
        attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, instance.instance_id))


def test_unknown_instance_is_refused(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    with pytest.raises(PermissionDenied, match="does not exist"):
        attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, "i-0123456789abcdef0"))


def test_detached_root_volume_fails_the_block_device_check(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    instance = launch_instance()
    ec2 = boto3.client("ec2", region_name="us-west-2")
    described = ec2.describe_instances(InstanceIds=[instance.instance_id])["Reservations"][0]["Instances"][0]
    root = next(m for m in described["BlockDeviceMappings"] if m["DeviceName"] == described["RootDeviceName"])
    ec2.detach_volume(VolumeId=root["Ebs"]["VolumeId"], InstanceId=instance.instance_id)

    with pytest.raises(PermissionDenied, match="root device"):
        attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, instance.instance_id))
    # Operators can opt out, globally or for accounts they validate otherwise.
    assert attest(attestor(tmp_path, [us_west_2], skip_block_device=True), signed(us_west_2, instance.instance_id))
    local = attestor(tmp_path, [us_west_2], account_ids_for_local_validation=[ACCOUNT])
    assert attest(local, signed(us_west_2, instance.instance_id))


def _root_attached_later(answer: str) -> str:
    """The root volume's attach time moved five minutes past the instance's (and its interface's)."""

    def later(mapping: re.Match[str]) -> str:
        def shifted(stamp: re.Match[str]) -> str:
            moved = datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00")) + timedelta(minutes=5)
            return f"<attachTime>{moved.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</attachTime>"

        return re.sub(r"<attachTime>([^<]+)</attachTime>", shifted, mapping.group(0))

    rewritten = re.sub(r"<blockDeviceMapping>.*?</blockDeviceMapping>", later, answer, flags=re.S)
    assert rewritten != answer
    return rewritten


def _instance_store_root(answer: str) -> str:
    """An instance-store root: no EBS mapping to compare at all."""
    rewritten = answer.replace(
        "<rootDeviceType>ebs</rootDeviceType>", "<rootDeviceType>instance-store</rootDeviceType>"
    )
    assert rewritten != answer
    return re.sub(r"<blockDeviceMapping>.*?</blockDeviceMapping>", "<blockDeviceMapping/>", rewritten, flags=re.S)


@pytest.mark.parametrize(
    ("rewrite", "refused"),
    [(_root_attached_later, "attached 300 s apart"), (_instance_store_root, None)],
    ids=["root-attached-later", "instance-store-root"],
)
def test_the_block_device_check_compares_attach_times(
    aws: MotoServer,
    tmp_path: Path,
    us_west_2: RegionSigner,
    monkeypatch: pytest.MonkeyPatch,
    rewrite: Callable[[str], str],
    refused: str | None,
) -> None:
    instance = launch_instance()
    proxy = RewrittenEc2(aws.endpoint, rewrite)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        if refused is None:  # nothing to compare: the check passes, as SPIRE's does
            assert attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, instance.instance_id))
            return
        with pytest.raises(PermissionDenied, match=refused):
            attest(attestor(tmp_path, [us_west_2]), signed(us_west_2, instance.instance_id))
        assert attest(attestor(tmp_path, [us_west_2], skip_block_device=True), signed(us_west_2, instance.instance_id))
    finally:
        proxy.stop()


def test_ec2_unreachable_is_internal(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = launch_instance()
    handle = attestor(tmp_path, [us_west_2])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(Internal, match="failed to describe the instance"):
        attest(handle, signed(us_west_2, instance.instance_id))


def test_assume_role_reaches_instances_of_other_accounts(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    other = "210987654321"
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{other}:role/spire-delegate", RoleSessionName="setup"
    )["Credentials"]
    instance = launch_instance(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    data = signed(us_west_2, instance.instance_id, account_id=other)

    with pytest.raises(PermissionDenied, match="does not exist"):
        attest(attestor(tmp_path, [us_west_2]), data)  # looked up in the server's own account
    result = attest(attestor(tmp_path, [us_west_2], assume_role="spire-delegate"), data)
    assert result.agent_path == f"/aws_iid/{other}/us-west-2/{instance.instance_id}"
    assert f"account_id:{other}" in result.selector_values


# --- the account allow-list ------------------------------------------------------------------


def test_account_list_file_allows_only_listed_accounts(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner
) -> None:
    instance = launch_instance()
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps(["111111111111"]))
    handle = attestor(tmp_path, [us_west_2], verify_organization={"account_list_file": str(accounts)})
    with pytest.raises(PermissionDenied, match=f"account {ACCOUNT} is not an active account"):
        attest(handle, signed(us_west_2, instance.instance_id))

    accounts.write_text(json.dumps(["111111111111", ACCOUNT]))
    fresh = attestor(
        tmp_path, [us_west_2], verify_organization={"account_list_file": str(accounts), "org_account_map_ttl": "1m"}
    )
    assert attest(fresh, signed(us_west_2, instance.instance_id))


def test_organizations_api_lists_active_accounts(aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner) -> None:
    organizations = boto3.client("organizations", region_name="us-west-2")
    organizations.create_organization(FeatureSet="ALL")
    instance = launch_instance()
    organization = {"management_account_id": ACCOUNT, "assume_org_role": "org-reader"}

    handle = attestor(tmp_path, [us_west_2], verify_organization=organization)
    assert attest(handle, signed(us_west_2, instance.instance_id))  # the management account is a member

    outsider = signed(us_west_2, "i-0123456789abcdef0", account_id="999999999999")
    with pytest.raises(PermissionDenied, match="999999999999 is not an active account"):
        attest(handle, outsider)


def test_organizations_api_down_fails_closed(
    aws: MotoServer, tmp_path: Path, us_west_2: RegionSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = attestor(
        tmp_path, [us_west_2], verify_organization={"management_account_id": ACCOUNT, "assume_org_role": "reader"}
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(Internal, match="cannot assume"):
        attest(handle, signed(us_west_2, "i-0123456789abcdef0"))


@pytest.mark.parametrize(
    ("plugin_data", "message"),
    [
        ({"access_key_id": "AKIA"}, "go together"),
        ({"partition": "aws-mars"}, "partition"),
        ({"verify_organization": {"management_account_id": ACCOUNT}}, "assume_org_role"),
        ({"verify_organization": {"account_list_file": "/nonexistent.json"}}, "cannot read"),
        ({"verify_organization": {"account_list_file": "x", "assume_org_role": "r"}}, "excludes"),
        ({"verify_organization": {"account_list_file": "x", "org_account_map_ttl": "30s"}}, "at least 1m"),
        ({"validate_eks_cluster_membership": {"eks_cluster_names": ["a"]}}, "not supported"),
        ({"agent_path_template": "/{{ .Tags | upper }}"}, "unsupported template action"),
        ({"region_certificates": {"us-west-2": "/nonexistent.pem"}}, "cannot read"),
        ({"skip_block_devices": True}, "skip_block_devices"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, plugin_data: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_plugin("server", "NodeAttestor", "aws_iid", plugin_data, make_core_config(tmp_path))


def test_shipped_certificates_cover_the_main_regions(tmp_path: Path) -> None:
    certificates = RegionCertificates({})
    for region in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "us-gov-west-1"):
        assert certificates.for_region(region).public_key().key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_every_shipped_certificate_is_an_aws_rsa2048_certificate(region: str) -> None:
    certificate = RegionCertificates({}).for_region(region)
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    certificate.verify_directly_issued_by(certificate)  # AWS's region certificates are self-signed
    organization = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [attribute.value for attribute in organization] == ["Amazon Web Services LLC"]
    now = datetime.now(UTC)
    assert certificate.not_valid_before_utc < now < certificate.not_valid_after_utc - timedelta(days=3650)
    others = [RegionCertificates({}).for_region(other) for other in SHIPPED_REGIONS if other != region]
    assert all(other.public_key() != key for other in others)  # each region signs with its own key


@pytest.mark.parametrize("genuine", GENUINE, ids=[g["region"] for g in GENUINE])
def test_genuine_aws_signed_documents_verify_with_the_shipped_certificates(genuine: dict[str, str]) -> None:
    data = payload(genuine["document"], genuine["rsa2048"])
    identity = verify_payload(data, RegionCertificates({}))
    assert (identity.account_id, identity.region, identity.instance_id) == (
        genuine["account_id"],
        genuine["region"],
        genuine["instance_id"],
    )
    assert (identity.availability_zone, identity.image_id) == (genuine["availability_zone"], genuine["image_id"])

    # AWS's signature under another region's certificate, or one bit of it changed, does not verify.
    der = decode_signature(genuine["rsa2048"])
    with pytest.raises(SignatureError, match="does not verify"):
        verified_content(der, RegionCertificates({}).for_region("eu-west-1"))
    flipped = bytearray(der)
    flipped[-40] ^= 0x01  # inside the RSA signature value
    with pytest.raises(InvalidArgument, match="does not verify with the region's AWS certificate"):
        verify_payload(payload(genuine["document"], base64.b64encode(bytes(flipped)).decode()), RegionCertificates({}))
