"""The two slots of each kind of authority, and when an authority's successor is due.

Each kind (the X.509 CA, the JWT key) has at most one authority per :class:`Status`: the
*active* one signs, the *prepared* one is already published and takes over, the *old* one
stays published until what it signed has expired. Their keys take turns in two KeyManager
slots (``x509-CA-A``/``B``, ``JWT-Signer-A``/``B``): a new authority takes the slot the active
one does not hold. Timing is SPIRE's: prepare at ``notAfter - min(lifetime/2, 30d)``, activate
at ``notAfter - min(lifetime/6, 7d)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pyspire.server.ca.issuer import CertificateAuthority, JwtSigningKey

__all__ = ["CaState", "JwtSlot", "Status", "X509Slot", "activate_at", "free_key_id", "prepare_at"]


class Status(enum.Enum):
    """Where an authority is in its life."""

    PREPARED = "prepared"
    ACTIVE = "active"
    OLD = "old"


def prepare_at(not_before: datetime, not_after: datetime) -> datetime:
    """When the successor of an authority valid [not_before, not_after] is prepared."""
    return not_after - min((not_after - not_before) / 2, timedelta(days=30))


def activate_at(not_before: datetime, not_after: datetime) -> datetime:
    """When the successor of an authority valid [not_before, not_after] becomes active."""
    return not_after - min((not_after - not_before) / 6, timedelta(days=7))


def free_key_id(prefix: str, in_use: list[str]) -> str:
    """The slot not held by the active authority (the old one's slot is reused)."""
    return f"{prefix}B" if f"{prefix}A" in in_use else f"{prefix}A"


@dataclass
class X509Slot:
    """An X.509 CA in its slot."""

    authority: CertificateAuthority
    status: Status
    tainted: bool = False


@dataclass
class JwtSlot:
    """A JWT key in its slot, with what the bundle and the journal need of it."""

    key: JwtSigningKey
    status: Status
    public_der: bytes
    not_before: datetime
    tainted: bool = False


@dataclass
class CaState:
    """Every slot of both kinds, and the journal record they are saved in."""

    x509: list[X509Slot] = field(default_factory=list)
    jwt: list[JwtSlot] = field(default_factory=list)
    journal_id: int = 0

    def find_x509(self, status: Status) -> X509Slot | None:
        """The X.509 authority with ``status``, if any."""
        return next((slot for slot in self.x509 if slot.status is status), None)

    def find_jwt(self, status: Status) -> JwtSlot | None:
        """The JWT key with ``status``, if any."""
        return next((slot for slot in self.jwt if slot.status is status), None)
