"""The names SPIRE gives its KMS keys, so that pyspire and SPIRE servers find each other's keys.

- alias: ``alias/SPIRE_SERVER/<trust domain, dots as _>/<server ID>/<key ID, . and + escaped>``
- description: ``SPIRE_SERVER_KEY/<trust domain, dots as _>/<key ID>``

KMS alias names allow only ``[a-zA-Z0-9:/_-]``, hence the escapes ``_2e`` for ``.`` and ``_2b``
for ``+`` (SPIRE's).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

__all__ = ["KeyNames"]

ALIAS_PREFIX = "alias/SPIRE_SERVER"
DESCRIPTION_PREFIX = "SPIRE_SERVER_KEY"


def _join(*parts: str) -> str:
    """Go's ``path.Join``: parts joined with ``/``, then cleaned."""
    return posixpath.normpath("/".join(part for part in parts if part))


def _encode(key_id: str) -> str:
    return key_id.replace(".", "_2e").replace("+", "_2b")


def _decode(encoded: str) -> str:
    return encoded.replace("_2e", ".").replace("_2b", "+")


@dataclass(frozen=True)
class KeyNames:
    """Aliases and descriptions of one server's keys in one trust domain."""

    trust_domain: str
    server_id: str

    @property
    def _trust_domain(self) -> str:
        return self.trust_domain.replace(".", "_")

    @property
    def trust_domain_alias_prefix(self) -> str:
        """What every alias of the trust domain starts with (any server's), ending in ``/``."""
        return _join(ALIAS_PREFIX, self._trust_domain) + "/"

    @property
    def server_alias_prefix(self) -> str:
        """What every alias of this server starts with, ending in ``/``."""
        return _join(ALIAS_PREFIX, self._trust_domain, self.server_id) + "/"

    @property
    def trust_domain_description_prefix(self) -> str:
        """What the description of every key of the trust domain starts with, ending in ``/``."""
        return _join(DESCRIPTION_PREFIX, self._trust_domain) + "/"

    def alias(self, key_id: str) -> str:
        """The alias of this server's key ``key_id``."""
        return _join(ALIAS_PREFIX, self._trust_domain, self.server_id, _encode(key_id))

    def description(self, key_id: str) -> str:
        """The description given to a new key ``key_id``."""
        return _join(DESCRIPTION_PREFIX, self._trust_domain, key_id)

    def key_id(self, alias: str) -> str | None:
        """The key ID an alias of this server names, or None for anyone else's alias."""
        if not alias.startswith(self.server_alias_prefix):
            return None
        return _decode(alias[len(self.server_alias_prefix) :])
