"""An SVID chain as SPIRE's Debug APIs (server and agent) show it.

SPIRE verifies the SVID against its trust bundle and lists the verified chain, leaf to root:
the root is shown too, with the trust domain's SPIFFE ID from its URI SAN. Subjects are
written as Go's ``pkix.Name.String()`` writes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from pyspire.spiffe import Bundle, SpiffeId, SpiffeIdError
from pyspire.spiffe.x509svid import verify

__all__ = ["ChainCertificate", "debug_chain"]

_GO_NAMES = {
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.DOMAIN_COMPONENT: NameOID.DOMAIN_COMPONENT.dotted_string,
    NameOID.USER_ID: NameOID.USER_ID.dotted_string,
}
"""Attribute names as Go writes them, where Python's differ."""


@dataclass(frozen=True)
class ChainCertificate:
    """One certificate of the chain as the Debug APIs describe it."""

    spiffe_id: SpiffeId | None
    expires_at: int
    subject: str


def debug_chain(chain: Sequence[x509.Certificate], bundle: Bundle) -> list[ChainCertificate]:
    """``chain`` (leaf first) verified against ``bundle``, leaf to root; X509SvidError when it does not verify."""
    _, paths = verify(chain, bundle)
    return [
        ChainCertificate(
            _uri_spiffe_id(certificate),
            int(certificate.not_valid_after_utc.timestamp()),
            certificate.subject.rfc4514_string(_GO_NAMES),
        )
        for certificate in paths[0]
    ]


def _uri_spiffe_id(certificate: x509.Certificate) -> SpiffeId | None:
    """The SPIFFE ID in a certificate's URI SAN (a CA's is the trust domain's own), if it has one."""
    with contextlib.suppress(x509.ExtensionNotFound, SpiffeIdError):
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            return SpiffeId.parse(uri)
    return None
