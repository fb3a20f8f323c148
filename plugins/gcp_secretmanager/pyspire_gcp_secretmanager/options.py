"""Where an SVID goes: the entry's ``gcp_secretmanager`` selectors, read as SPIRE reads them.

They reach the plugin as ``key:value`` metadata:

- ``name:<secret id>`` (required): the secret's ID in its project.
- ``projectid:<project>`` (required): the Google Cloud project of the secret.
- ``role:<role>`` and ``serviceaccount:<email>`` (together or not at all): the secret's IAM
  policy is a single binding of that role to that service account.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspire.plugin.errors import InvalidArgument

__all__ = ["SecretOptions"]

_KEYS = ("name", "projectid", "role", "serviceaccount")
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
"""Secret Manager's rule for secret IDs."""
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
"""Project IDs and numbers (and domain-scoped ``example.com:project``): never a ``/``, which
would make the resource name point somewhere else."""


@dataclass(frozen=True)
class SecretOptions:
    """The secret an entry's selectors name, and the IAM binding they ask for."""

    project_id: str
    name: str
    role: str = ""
    service_account: str = ""
    """The IAM member, ``serviceAccount:<email>``, or "" when no policy is asked for."""

    @property
    def parent(self) -> str:
        """The project, as Secret Manager names it: ``projects/<id>``."""
        return f"projects/{self.project_id}"

    @property
    def secret_name(self) -> str:
        """The secret's resource name: ``projects/<id>/secrets/<name>``."""
        return f"{self.parent}/secrets/{self.name}"

    @property
    def wants_policy(self) -> bool:
        return bool(self.role and self.service_account)

    @classmethod
    def parse(cls, metadata: Sequence[str]) -> SecretOptions:
        """Read the selectors; InvalidArgument with SPIRE's wording for what is missing.

        A key given twice, or one the plugin does not know, is refused rather than picked or
        ignored: the SVID would otherwise be stored, or readable, where the entry's author
        did not say. An empty value counts as missing.
        """
        found: dict[str, str] = {}
        for item in metadata:
            key, sep, value = item.partition(":")
            if not sep:
                raise InvalidArgument(f"invalid metadata: metadata does not contain a colon: {item!r}")
            if key not in _KEYS:
                raise InvalidArgument(
                    f'invalid metadata: unknown selector "gcp_secretmanager:{key}" '
                    "(expected name, projectid, role or serviceaccount)"
                )
            if key in found:
                raise InvalidArgument(
                    f'invalid metadata: two "gcp_secretmanager:{key}" selectors: one secret per entry'
                )
            found[key] = value
        if not found.get("name"):
            raise InvalidArgument("name is required")
        if not found.get("projectid"):
            raise InvalidArgument("projectid is required")
        if not _SECRET_ID.fullmatch(found["name"]):
            raise InvalidArgument(
                f"invalid metadata: name {found['name']!r} is not a secret ID (1 to 255 letters, digits, _ or -)"
            )
        if not _PROJECT.fullmatch(found["projectid"]):
            raise InvalidArgument(f"invalid metadata: projectid {found['projectid']!r} is not a project ID")
        role, account = found.get("role", ""), found.get("serviceaccount", "")
        if account and not role:
            raise InvalidArgument("role is required when service account is set")
        if role and not account:
            raise InvalidArgument("service account is required when role is set")
        return cls(
            project_id=found["projectid"],
            name=found["name"],
            role=role,
            service_account=f"serviceAccount:{account}" if account else "",
        )
