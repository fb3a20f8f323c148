"""KeyManager ``aws_kms``: the server's keys are KMS keys; they sign in KMS and never leave it.

At start the plugin finds its keys by alias (``alias/SPIRE_SERVER/<td>/<server ID>/<key ID>``,
see :mod:`pyspire_aws_kms.naming`), so a restarted server, or a SPIRE server given the same
server ID, keeps signing with the same keys. The server ID is ``key_identifier_value``, or the
UUID kept in ``key_identifier_file`` (created on first start, mode 0600).

``generate_key`` creates a new KMS key (``SIGN_VERIFY``, the key policy of ``key_policy_file``
or SPIRE's default one for the server's assumed role, ``key_tags``), then points the key ID's
alias at it; the key it replaces is scheduled for deletion. Public keys are cached, so
``get_public_key(s)`` make no AWS calls; ``sign_data`` is one ``Sign`` call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pyspire.plugin import (
    CoreConfig,
    FailedPrecondition,
    HashAlgorithm,
    Internal,
    InvalidArgument,
    KeyType,
    NotFound,
    PluginLogger,
    PublicKey,
    hookimpl,
    parse_plugin_data,
)
from pyspire.plugin.server_id import read_server_id, server_id_from_file
from pyspire_aws_common import aws_error

from pyspire_aws_kms.aws import new_clients
from pyspire_aws_kms.config import AwsKmsConfig
from pyspire_aws_kms.naming import KeyNames
from pyspire_aws_kms.signing import KEY_SPECS, KEY_TYPES, kms_signing_request
from pyspire_aws_kms.upkeep import KeyEntry, Upkeep

__all__ = ["AwsKmsKeyManager"]

_NO_POLICY = object()
"""The default policy could not be built (no assumed role): KMS's own default applies."""


@dataclass(frozen=True)
class _Key:
    entry: KeyEntry
    public: PublicKey


def _default_policy(account: str, role: str) -> str:
    """SPIRE's default key policy: the server's role may do anything, the account may look."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Allow full access to the SPIRE Server role",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:role/{role}"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "Allow KMS console to display the key and policy",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": ["kms:Describe*", "kms:List*", "kms:Get*"],
                    "Resource": "*",
                },
            ],
        },
        indent=1,
    )


def _assumed_role(arn: str) -> str | None:
    """The role name of an ``arn:aws:sts::<account>:assumed-role/<role>/<session>`` ARN."""
    resource = arn.rsplit(":", 1)[-1].split("/")
    if len(resource) >= 2 and resource[0] == "assumed-role":
        return resource[1]
    return None


class AwsKmsKeyManager:
    """Server KeyManager ``aws_kms``."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._upkeep: Upkeep | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AwsKmsConfig, plugin_data)
        config.check()
        config.key_policy()
        if config.key_identifier_file:
            read_server_id(config.key_identifier_file)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AwsKmsConfig, plugin_data)
        config.check()
        self._log = logger
        # The key policy: the file's, or (None) SPIRE's default, built on first use, or
        # _NO_POLICY when there is no assumed role to build it for.
        self._policy: object = config.key_policy()
        self._tags = [{"TagKey": key, "TagValue": value} for key, value in sorted(config.key_tags.items())]
        server_id = config.key_identifier_value or server_id_from_file(config.key_identifier_file)
        logger.debug("Loaded server id", extra={"server_id": server_id})
        self._names = KeyNames(core.trust_domain.name, server_id)
        self._kms, self._sts = new_clients(config.region, config.access_key_id, config.secret_access_key)
        self._keys = {key.public.id: key for key in self._fetch_keys()}
        for key in self._keys.values():
            logger.debug("Key loaded", extra={"key_arn": key.entry.arn, "alias_name": key.entry.alias})
        self._upkeep = Upkeep(self._kms, self._names, self._entries, logger)
        self._upkeep.start()

    def _entries(self) -> list[KeyEntry]:
        return [key.entry for key in list(self._keys.values())]

    def _fetch_keys(self) -> list[_Key]:
        """This server's keys, found by their aliases."""
        keys = []
        try:
            for page in self._kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 100}):
                for alias in page.get("Aliases", []):
                    key_id = self._names.key_id(alias.get("AliasName", ""))
                    if key_id is None:
                        continue
                    if not alias.get("TargetKeyId"):
                        raise FailedPrecondition(f'found SPIRE alias without key: name="{alias["AliasName"]}"')
                    keys.append(self._fetch_key(key_id, alias["AliasName"], alias["AliasArn"]))
        except (BotoCoreError, ClientError) as err:
            raise aws_error("failed to fetch aliases", err) from None
        return keys

    def _fetch_key(self, key_id: str, alias: str, alias_arn: str) -> _Key:
        metadata = self._kms.describe_key(KeyId=alias_arn)["KeyMetadata"]
        if not metadata.get("Enabled"):
            # Something outside the plugin disabled or deleted the key but kept its alias:
            # refuse to start rather than silently replace a CA key, so it can be undone.
            raise FailedPrecondition(f'found disabled SPIRE key: "{metadata["Arn"]}", alias: "{alias}"')
        key_type = KEY_TYPES.get(metadata.get("KeySpec", ""))
        if key_type is None:
            raise Internal(f'unsupported key spec {metadata.get("KeySpec")} of key "{metadata["Arn"]}"')
        der = self._kms.get_public_key(KeyId=alias_arn)["PublicKey"]
        return _Key(KeyEntry(metadata["Arn"], alias), PublicKey(key_id, key_type, der))

    def _key_policy(self) -> str | None:
        if self._policy is None:
            identity = self._sts.get_caller_identity()
            role = _assumed_role(identity["Arn"])
            if role is None:
                self._log.warning(
                    "The server has not assumed an IAM role: new keys get KMS's default key policy. "
                    "SPIRE will require a role for its default policy in a future version.",
                    extra={"reason": f"arn does not contain an assumed role: {identity['Arn']}"},
                )
                self._policy = _NO_POLICY
            else:
                self._policy = _default_policy(identity["Account"], role)
        return self._policy if isinstance(self._policy, str) else None

    @hookimpl
    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        if not key_id:
            raise InvalidArgument("key id is required")
        with self._lock:
            try:
                key = self._create_key(key_id, key_type)
                previous = self._keys.get(key_id)
                if previous is None:
                    self._kms.create_alias(AliasName=key.entry.alias, TargetKeyId=key.entry.arn)
                    self._log.debug("Alias created", extra={"alias_name": key.entry.alias, "key_arn": key.entry.arn})
                else:
                    self._kms.update_alias(AliasName=key.entry.alias, TargetKeyId=key.entry.arn)
                    self._log.debug("Alias updated", extra={"alias_name": key.entry.alias, "key_arn": key.entry.arn})
            except (BotoCoreError, ClientError) as err:
                raise aws_error(f'failed to create key "{key_id}"', err) from None
            self._keys[key_id] = key
        if previous is not None and self._upkeep is not None:
            self._upkeep.schedule_deletion(previous.entry.arn)
        return key.public

    def _create_key(self, key_id: str, key_type: KeyType) -> _Key:
        request: dict[str, Any] = {
            "Description": self._names.description(key_id),
            "KeyUsage": "SIGN_VERIFY",
            "KeySpec": KEY_SPECS[key_type],
        }
        policy = self._key_policy()
        if policy is not None:
            request["Policy"] = policy
        if self._tags:
            request["Tags"] = self._tags
        arn = self._kms.create_key(**request)["KeyMetadata"]["Arn"]
        self._log.debug("Key created", extra={"key_arn": arn})
        der = self._kms.get_public_key(KeyId=arn)["PublicKey"]
        return _Key(KeyEntry(arn, self._names.alias(key_id)), PublicKey(key_id, key_type, der))

    @hookimpl
    def get_public_key(self, key_id: str) -> PublicKey | None:
        key = self._keys.get(key_id)
        return None if key is None else key.public

    @hookimpl
    def get_public_keys(self) -> list[PublicKey]:
        return [key.public for key in list(self._keys.values())]

    @hookimpl
    def sign_data(self, key_id: str, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise NotFound(f'key "{key_id}" not found')
        digest, algorithm = kms_signing_request(key.public.type, data, hash_algorithm, rsa_pss)
        try:
            answer = self._kms.sign(
                KeyId=key.entry.arn, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm
            )
        except (BotoCoreError, ClientError) as err:
            raise aws_error(f'failed to sign with key "{key_id}"', err) from None
        return bytes(answer["Signature"])

    @hookimpl
    def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
