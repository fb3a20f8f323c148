"""The names SPIRE gives its transit keys, so that pyspire and SPIRE servers find the same keys.

A key is named ``<server ID>-<UUID>-<key ID>``: the server ID says whose it is (one transit
mount can serve many servers), the UUID, new for every key, lets a rotation create the next
key before the one it replaces is deleted, and the key ID is the server's slot name
(``x509-CA-A``, ``JWT-Signer-B``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

__all__ = ["KeyNames", "check_key_id"]

_UUID_LENGTH = 36
_KEY_ID = re.compile(r"[\w.-]*\w")
"""Key IDs Vault can carry at the end of a key name (it must end with a word character)."""


def check_key_id(key_id: str) -> str | None:
    """Why ``key_id`` cannot name a transit key, or None when it can."""
    if not key_id:
        return "key id is required"
    if not _KEY_ID.fullmatch(key_id):
        return f'key id "{key_id}" cannot be part of a Vault key name: use letters, digits, "_", "." and "-"'
    return None


@dataclass(frozen=True)
class KeyNames:
    """Transit key names of one server."""

    server_id: str

    def new_name(self, key_id: str) -> str:
        """A fresh name for a new key in slot ``key_id``."""
        return f"{self.server_id}-{uuid.uuid4()}-{key_id}"

    def key_id(self, name: str) -> str | None:
        """The key ID of this server's key ``name``, or None for any other key in the mount."""
        prefix = f"{self.server_id}-"
        if not name.startswith(prefix):
            return None
        rest = name[len(prefix) :]
        unique, separator, key_id = rest[:_UUID_LENGTH], rest[_UUID_LENGTH : _UUID_LENGTH + 1], rest[_UUID_LENGTH + 1 :]
        if separator != "-" or not key_id:
            return None
        try:
            uuid.UUID(unique)
        except ValueError:
            return None
        return key_id
