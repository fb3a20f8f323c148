"""SVIDStore (agent): delivers SVIDs of ``store_svid`` entries to an external store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import X509Svid


@hookspec(firstresult=True)
def put_x509_svid(svid: X509Svid, metadata: Sequence[str], federated_bundles: Sequence[bytes]) -> None:
    """Store or replace an X509-SVID (with its private key).

    ``metadata`` are the entry's selector values of this plugin's type, which say where to
    store it (``secretname:db-cert``). Called on every rotation.
    """


@hookspec(firstresult=True)
def delete_x509_svid(metadata: Sequence[str]) -> None:
    """Remove the SVID stored under ``metadata`` (its entry was deleted)."""
