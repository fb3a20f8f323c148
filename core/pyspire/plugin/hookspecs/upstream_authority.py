"""UpstreamAuthority: makes the server's CA an intermediate of an existing PKI.

At most one per server. Without it the server signs its own root.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pyspire.plugin.markers import hookspec
from pyspire.plugin.upstream import JwtKey, UpstreamTrust, UpstreamX509Ca


@hookspec(firstresult=True)
def mint_x509_ca(csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
    """Sign the server's CA certificate request (DER PKCS#10) as an intermediate CA.

    Called at start-up and at every CA rotation, in a worker thread. Use only the public key
    of the CSR and its subject; the certificate must have CA=true, keyCertSign and cRLSign,
    and the trust domain's SPIFFE ID as its URI SAN. ``preferred_ttl`` is the server's
    ``ca_ttl``; the upstream may issue a shorter one (the server then rotates sooner).
    An upstream CA whose key the plugin holds as PEM (read from a file, a secret store)
    need not be checked and signed by hand: :func:`~pyspire.plugin.load_pem_upstream_ca`
    checks it as SPIRE does and its ``sign`` does this, as ``disk`` and ``awssecret`` use it.

    Raise :class:`~pyspire.plugin.Unavailable` when the upstream cannot be reached: the
    server keeps its current CA and asks again.
    """


@hookspec(firstresult=True)
def publish_jwt_key(jwt_key: JwtKey) -> Sequence[JwtKey]:
    """Publish a new JWT signing key upstream; return the upstream's JWT keys.

    Implemented by authorities that are themselves SPIFFE trust domains (nested SPIRE), so
    JWT-SVIDs signed downstream validate everywhere in the tree. Others raise
    :class:`~pyspire.plugin.Unimplemented` or do not implement it.
    """


@hookspec(firstresult=True)
def upstream_trust() -> UpstreamTrust:
    """The upstream's current X.509 roots and JWT keys.

    Called at every rotation step (every 10 s), in a worker thread; whatever is new is added
    to the server's bundle. An upstream that rotates its own roots (a nested SPIRE tree)
    publishes the next root before it signs with it: asking here is how that root reaches
    the workloads of this server in time. Raise :class:`~pyspire.plugin.Unavailable` when
    the upstream cannot be reached (the server asks again at the next step).
    """
