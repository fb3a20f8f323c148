"""KeyManager: holds private keys and signs with them; keys never leave it.

The server's CA and JWT keys, and the agent's own SVID key, live in a key manager. The
daemons see only :class:`~pyspire.plugin.PublicKey` and signatures. Key IDs are chosen by
the daemon (``x509-CA-A``, ``JWT-Signer-B``, ``agent-svid-A``...).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspire.plugin.keys import HashAlgorithm, KeyType, PublicKey
from pyspire.plugin.markers import hookspec


@hookspec(firstresult=True)
def generate_key(key_id: str, key_type: KeyType) -> PublicKey:
    """Create a new private key under ``key_id`` and return its public half.

    Replaces any key that already has this ID (rotation reuses a slot's ID). A persistent key
    manager must have stored the key durably before returning, so that a crash right after
    cannot lose a key whose certificate is already published.
    """


@hookspec(firstresult=True)
def get_public_key(key_id: str) -> PublicKey | None:
    """The public key stored under ``key_id``, or ``None`` if there is none."""


@hookspec(firstresult=True)
def get_public_keys() -> Sequence[PublicKey]:
    """Every key the key manager holds, in no particular order."""


@hookspec(firstresult=True)
def sign_data(key_id: str, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> bytes:
    """Sign ``data`` (the full message, not a digest) with the key ``key_id``.

    ECDSA signatures are DER-encoded (as X.509 and CSRs carry them); RSA signatures use
    PKCS#1 v1.5, or PSS with a salt as long as the digest when ``rsa_pss`` is true. Raise
    :class:`~pyspire.plugin.NotFound` for an unknown key ID. Called on the hot path of SVID
    signing: avoid per-call I/O.
    """


@hookspec(firstresult=True)
def export_private_key(key_id: str) -> bytes:
    """The PKCS#8 DER private key ``key_id`` — agent key managers only.

    Called only by the agent, only for its own SVID key, to present that SVID in TLS to
    the server: Python's ``ssl`` module must load the key itself and cannot delegate the
    handshake signature to a plugin. A key manager whose keys cannot leave their hardware
    raises :class:`~pyspire.plugin.Unimplemented`, and the agent then refuses to start with
    it. Server key managers do not implement it: the server never exports a CA key.
    """
