"""Signing certificates, CSRs and JWTs with keys that never leave their key manager.

``cryptography`` signs a certificate only with a private key object it holds, while a CA key
lives in a KeyManager plugin that only signs bytes. So pyspire builds the to-be-signed bytes
itself (with ``cryptography``'s builders where they allow it), has the signer sign them, and
assembles the DER around the signature.
"""

from pyspire.crypto.csr import CsrError, build_csr, parse_csr
from pyspire.crypto.jws import sign_jwt
from pyspire.crypto.signer import KeyManagerSigner, LocalSigner, Signer
from pyspire.crypto.x509 import CA_KEY_USAGE, sign_certificate

__all__ = [
    "CA_KEY_USAGE",
    "CsrError",
    "KeyManagerSigner",
    "LocalSigner",
    "Signer",
    "build_csr",
    "parse_csr",
    "sign_certificate",
    "sign_jwt",
]
