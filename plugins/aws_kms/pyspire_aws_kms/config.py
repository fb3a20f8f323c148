"""``plugin_data`` of ``KeyManager "aws_kms"``, with SPIRE's keys and checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pyspire.plugin import PluginConfigError

__all__ = ["AwsKmsConfig"]

_KEY_IDENTIFIER = re.compile(r"[A-Za-z0-9/_-]+")
_MAX_KEY_IDENTIFIER = 256
_MAX_TAGS = 50
_TAG_PUNCTUATION = frozenset("+-=._:/@")


@dataclass(frozen=True)
class AwsKmsConfig:
    """The keys SPIRE's ``aws_kms`` takes; ``check`` refuses what SPIRE refuses, naming the key."""

    region: str
    access_key_id: str = ""
    secret_access_key: str = ""
    key_identifier_file: str = ""
    key_identifier_value: str = ""
    key_policy_file: str = ""
    key_tags: dict[str, str] = field(default_factory=dict)
    enable_tag_based_key_discovery: bool = False

    def check(self) -> None:
        """Raise PluginConfigError for the first key that cannot work."""
        if not self.region:
            raise PluginConfigError("region", "is required")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            missing = "secret_access_key" if self.access_key_id else "access_key_id"
            raise PluginConfigError(missing, "access_key_id and secret_access_key are set together or not at all")
        if self.key_identifier_file and self.key_identifier_value:
            raise PluginConfigError(
                "key_identifier_value", "key_identifier_file and key_identifier_value exclude each other"
            )
        if not (self.key_identifier_file or self.key_identifier_value):
            raise PluginConfigError("key_identifier_file", "key_identifier_file or key_identifier_value is required")
        if self.key_identifier_value:
            _check_key_identifier(self.key_identifier_value)
        _check_tags(self.key_tags)
        if self.enable_tag_based_key_discovery:
            raise PluginConfigError(
                "enable_tag_based_key_discovery",
                "tag-based key discovery is not supported: this plugin finds its keys by alias "
                "(SPIRE's default); remove the key or set it to false",
            )

    def key_policy(self) -> str | None:
        """The key policy document of ``key_policy_file``, or None to build the default one."""
        if not self.key_policy_file:
            return None
        try:
            return Path(self.key_policy_file).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise PluginConfigError("key_policy_file", f"cannot read {self.key_policy_file}: {err}") from None


def _check_key_identifier(value: str) -> None:
    if not _KEY_IDENTIFIER.fullmatch(value):
        raise PluginConfigError(
            "key_identifier_value",
            "must contain only alphanumeric characters, forward slashes (/), underscores (_), and dashes (-)",
        )
    if value.startswith("alias/aws/"):
        raise PluginConfigError("key_identifier_value", "must not start with alias/aws/")
    if len(value) > _MAX_KEY_IDENTIFIER:
        raise PluginConfigError("key_identifier_value", f"must not be longer than {_MAX_KEY_IDENTIFIER} characters")


def _valid_tag_text(text: str) -> bool:
    return all(c.isalnum() or c.isspace() or c in _TAG_PUNCTUATION for c in text)


def _check_tags(tags: dict[str, str]) -> None:
    """KMS's tag rules, and SPIRE's: ``aws:`` and ``spire-`` prefixes are reserved."""
    if len(tags) > _MAX_TAGS:
        raise PluginConfigError("key_tags", f"{len(tags)} tags exceed the AWS limit of {_MAX_TAGS}")
    for key, value in tags.items():
        if not key or len(key) > 128:
            raise PluginConfigError("key_tags", f'tag key "{key}" must be 1 to 128 characters long')
        for reserved in ("aws:", "spire-"):
            if key.lower().startswith(reserved):
                raise PluginConfigError("key_tags", f'tag key "{key}" uses the reserved prefix "{reserved}"')
        if not _valid_tag_text(key):
            raise PluginConfigError(
                "key_tags", f'tag key "{key}" has characters other than letters, numbers, spaces and + - = . _ : / @'
            )
        if len(value) > 256:
            raise PluginConfigError("key_tags", f'the value of tag "{key}" is longer than 256 characters')
        if not _valid_tag_text(value):
            raise PluginConfigError(
                "key_tags",
                f'the value of tag "{key}" has characters other than letters, numbers, spaces and + - = . _ : / @',
            )
