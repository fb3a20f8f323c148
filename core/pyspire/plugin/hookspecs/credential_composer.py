"""CredentialComposer: adjusts the attributes of credentials before they are signed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cryptography import x509

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import SpiffeId


@hookspec(firstresult=True)
def compose_workload_x509_svid(
    spiffe_id: SpiffeId,
    subject: x509.Name,
    extensions: tuple[x509.Extension[x509.ExtensionType], ...],
) -> tuple[x509.Name, tuple[x509.Extension[x509.ExtensionType], ...]]:
    """Return the subject and extra extensions for a workload X509-SVID.

    Called for every workload X509-SVID the server signs, with what the server would use.
    The SPIFFE ID (URI SAN), validity, key usages and basic constraints are the server's and
    cannot be changed here.
    """


@hookspec(firstresult=True)
def compose_workload_jwt_svid(spiffe_id: SpiffeId, claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the claims of a workload JWT-SVID.

    ``sub``, ``aud``, ``exp`` and ``iat`` are the server's; a composer adds claims.
    """
