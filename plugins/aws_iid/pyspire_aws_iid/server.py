"""The server side of ``aws_iid``: verify what EC2 signed, then ask EC2 about the instance.

Order matters for safety: the signature is checked before anything in the document is used,
the organization allow-list before any call on the node's behalf, and the instance must be
pending or running. Every AWS failure refuses the node (Internal); nothing is stored until
the server core accepts the result. Trust on first use is the core's: the result is not
re-attestable, so a second attestation of one instance is refused until its agent is evicted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PermissionDenied, PluginConfigError

from pyspire_aws_iid.aws_clients import AccountAllowList, AwsSessions, OrganizationConfig, aws_error
from pyspire_aws_iid.document import PLUGIN_NAME, InstanceIdentity, RegionCertificates, verify_payload

__all__ = ["ServerAwsIid"]

DEFAULT_TEMPLATE = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"
PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
MAX_ATTACH_SKEW_SECONDS = 60
"""Root volume and primary network interface attached further apart than this: tampered."""


@dataclass(frozen=True)
class ServerAwsIidConfig:
    """``plugin_data`` of the server's ``NodeAttestor "aws_iid"`` (SPIRE's keys)."""

    access_key_id: str = ""
    secret_access_key: str = ""
    skip_block_device: bool = False
    disable_instance_profile_selectors: bool = False
    account_ids_for_local_validation: list[str] = field(default_factory=list)
    agent_path_template: str = DEFAULT_TEMPLATE
    assume_role: str = ""
    partition: str = "aws"
    verify_organization: OrganizationConfig | None = None
    validate_eks_cluster_membership: dict[str, Any] | None = None
    region_certificates: dict[str, str] = field(default_factory=dict)
    """pyspire's addition: ``"<region>" = "<PEM file>"`` adds or replaces a region's certificate."""


class ServerAwsIid:
    """Attests EC2 instances by their signed instance identity documents."""

    def __init__(self) -> None:
        self._config = ServerAwsIidConfig()
        self._certificates: RegionCertificates | None = None
        self._sessions: AwsSessions | None = None
        self._allowed_accounts: AccountAllowList | None = None
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)
        self._trust_domain = ""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerAwsIidConfig, plugin_data)
        if bool(config.access_key_id) != bool(config.secret_access_key):
            raise PluginConfigError(
                "access_key_id" if not config.access_key_id else "secret_access_key",
                "access_key_id and secret_access_key go together",
            )
        if config.partition not in PARTITIONS:
            raise PluginConfigError("partition", f'"{config.partition}" is not one of {", ".join(PARTITIONS)}')
        if config.validate_eks_cluster_membership is not None:
            raise PluginConfigError("validate_eks_cluster_membership", "EKS cluster validation is not supported yet")
        sessions = AwsSessions(config.access_key_id, config.secret_access_key, config.assume_role, config.partition)
        self._template = AgentPathTemplate(config.agent_path_template)
        self._certificates = RegionCertificates(config.region_certificates)
        self._allowed_accounts = (
            AccountAllowList(config.verify_organization, sessions) if config.verify_organization else None
        )
        self._sessions = sessions
        self._config = config
        self._trust_domain = core.trust_domain.name

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        assert self._certificates is not None
        assert self._sessions is not None
        identity = verify_payload(payload, self._certificates)
        if self._allowed_accounts is not None and identity.account_id not in self._allowed_accounts:
            raise PermissionDenied(
                f"account {identity.account_id} is not an active account of the configured organization"
            )

        ec2 = self._sessions.client("ec2", identity.region, identity.account_id)
        instance = self._instance(ec2, identity)
        if (
            not self._config.skip_block_device
            and identity.account_id not in self._config.account_ids_for_local_validation
        ):
            _check_block_device(instance)
        tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", []) if "Key" in tag and "Value" in tag}

        path = self._template.render(
            {
                "PluginName": PLUGIN_NAME,
                "AccountID": identity.account_id,
                "Region": identity.region,
                "InstanceID": identity.instance_id,
                "TrustDomain": self._trust_domain,
                "Tags": tags,
            }
        )
        return AttestationResult(path, self._selectors(identity, instance, tags), can_reattest=False)

    @staticmethod
    def _instance(ec2: Any, identity: InstanceIdentity) -> Mapping[str, Any]:
        try:
            described = ec2.describe_instances(
                InstanceIds=[identity.instance_id],
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}],
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                raise PermissionDenied(f"instance {identity.instance_id} does not exist") from None
            raise aws_error("failed to describe the instance", err) from None
        except BotoCoreError as err:
            raise aws_error("failed to describe the instance", err) from None
        for reservation in described.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance.get("InstanceId") == identity.instance_id:
                    return instance  # type: ignore[no-any-return]
        raise PermissionDenied(f"instance {identity.instance_id} is not pending or running")

    def _selectors(
        self, identity: InstanceIdentity, instance: Mapping[str, Any], tags: Mapping[str, str]
    ) -> tuple[str, ...]:
        values = {
            f"account_id:{identity.account_id}",
            f"az:{identity.availability_zone}",
            f"image:id:{identity.image_id}",
            f"instance:id:{identity.instance_id}",
            f"region:{identity.region}",
        }
        values.update(f"tag:{key}:{value}" for key, value in tags.items())
        for group in instance.get("SecurityGroups", []):
            values.add(f"sg:id:{group['GroupId']}")
            values.add(f"sg:name:{group['GroupName']}")
        profile_arn = instance.get("IamInstanceProfile", {}).get("Arn")
        if profile_arn and not self._config.disable_instance_profile_selectors:
            values.update(f"iamrole:{arn}" for arn in self._role_arns(identity, profile_arn))
        # Kept as SPIRE keeps them, empty values included ("tag:spare:"): an entry written for
        # SPIRE selects on exactly these strings.
        return tuple(sorted(values))

    def _role_arns(self, identity: InstanceIdentity, profile_arn: str) -> list[str]:
        assert self._sessions is not None
        resource = profile_arn.split(":", 5)[-1]
        if not resource.startswith("instance-profile/"):
            raise Internal(f"{profile_arn} is not an instance profile ARN")
        name = resource.rsplit("/", 1)[-1]
        iam = self._sessions.client("iam", identity.region, identity.account_id)
        try:
            profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except (BotoCoreError, ClientError) as err:
            raise aws_error(f"failed to get instance profile {name}", err) from None
        return [role["Arn"] for role in profile.get("Roles", []) if role.get("Arn")]


def _check_block_device(instance: Mapping[str, Any]) -> None:
    """Refuse an instance whose root volume was attached long after its primary interface.

    A root volume swapped in later (to boot a copy of another disk under this instance's
    identity) shows as an attach time far from the primary network interface's.
    """
    interface_time: datetime | None = None
    for interface in instance.get("NetworkInterfaces", []):
        attachment = interface.get("Attachment", {})
        if attachment.get("DeviceIndex") == 0:
            interface_time = attachment.get("AttachTime")
    if interface_time is None:
        raise Internal("the instance's network interface with device index 0 is not visible")
    if instance.get("RootDeviceType") == "instance-store":
        return
    root_name = instance.get("RootDeviceName")
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root_name:
            root_time = mapping.get("Ebs", {}).get("AttachTime")
            break
    else:
        raise PermissionDenied(f"the root device {root_name} is not attached to the instance")
    if root_time is None:
        raise PermissionDenied(f"the root device {root_name} has no attach time")
    skew = abs((interface_time - root_time).total_seconds())
    if skew > MAX_ATTACH_SKEW_SECONDS:
        raise PermissionDenied(
            f"the root volume and primary network interface were attached {int(skew)} s apart"
            f" (more than {MAX_ATTACH_SKEW_SECONDS} s): the root volume may have been replaced"
        )
