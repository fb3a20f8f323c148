"""Where an SVID goes (the entry's selectors) and what the secret holds (SPIRE's JSON document).

An entry's ``aws_secretsmanager`` selectors reach the plugin as ``key:value`` metadata:

- ``secretname:<name>``: the secret's friendly name; needed to create it.
- ``arn:<arn>``: the secret's ARN; takes precedence over the name to find it.
- ``kmskeyid:<key>``: the KMS key (ID, ARN, alias) a new secret is encrypted with; AWS's
  default key for Secrets Manager otherwise.

The secret's value is SPIRE's document (:func:`pyspire.plugin.svid_document.secret_document`,
shared with ``gcp_secretmanager``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspire.plugin.errors import InvalidArgument

__all__ = ["SecretLocation"]

_KEYS = {"secretname": "name", "arn": "arn", "kmskeyid": "kms_key_id"}


@dataclass(frozen=True)
class SecretLocation:
    """The secret an entry's selectors name."""

    name: str = ""
    arn: str = ""
    kms_key_id: str = ""

    @property
    def secret_id(self) -> str:
        """What Secrets Manager is asked about: the ARN when given, the name otherwise."""
        return self.arn or self.name

    @classmethod
    def parse(cls, metadata: Sequence[str]) -> SecretLocation:
        """Read ``secretname:``, ``arn:`` and ``kmskeyid:`` values; InvalidArgument for anything else.

        A key given twice, or one the plugin does not know, is refused rather than picked or
        ignored: the entry would otherwise store its SVID somewhere its author did not say.
        """
        found: dict[str, str] = {}
        for item in metadata:
            key, sep, value = item.partition(":")
            if not sep:
                raise InvalidArgument(f"failed to parse Metadata: metadata does not contain a colon: {item!r}")
            if key not in _KEYS:
                raise InvalidArgument(
                    f'unknown selector "aws_secretsmanager:{key}" (expected secretname, arn or kmskeyid)'
                )
            if key in found:
                raise InvalidArgument(f'two "aws_secretsmanager:{key}" selectors: one secret per entry')
            found[key] = value
        location = cls(**{_KEYS[key]: value for key, value in found.items()})
        if not location.secret_id:
            raise InvalidArgument("either the secret name or ARN is required")
        return location
