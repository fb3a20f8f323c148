"""Certificates signed by a :class:`~pyspire.crypto.signer.Signer`.

The builder signs once with a throw-away key of the signer's type: that yields the exact
TBSCertificate (whose signature-algorithm field matches the real key) and the outer
AlgorithmIdentifier. The real signer then signs the TBS bytes, and the certificate is
reassembled around its signature. The throw-away keys are made once per type and never
sign anything that is kept.
"""

from __future__ import annotations

import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from pyspire.crypto.der import bit_string, element_end, sequence
from pyspire.crypto.signer import Signer, signature_hash
from pyspire.plugin.keys import HashAlgorithm, KeyType

__all__ = ["sign_certificate"]

_HASHES: dict[HashAlgorithm, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}
_placeholders: dict[KeyType, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {}
_lock = threading.Lock()


def _placeholder(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A throw-away key of ``key_type``'s family (RSA signature IDs do not depend on size)."""
    family = KeyType.RSA_2048 if key_type.is_rsa else key_type
    with _lock:
        key = _placeholders.get(family)
        if key is None:
            if family is KeyType.EC_P256:
                key = ec.generate_private_key(ec.SECP256R1())
            elif family is KeyType.EC_P384:
                key = ec.generate_private_key(ec.SECP384R1())
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _placeholders[family] = key
        return key


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """Finish ``builder`` (subject key, names, validity, extensions all set) with ``signer``."""
    hash_algorithm = signature_hash(signer.key_type)
    draft = builder.sign(_placeholder(signer.key_type), _HASHES[hash_algorithm]())
    der = draft.public_bytes(Encoding.DER)
    tbs = draft.tbs_certificate_bytes
    outer_start = der.index(tbs)
    algorithm_end = element_end(der, outer_start + len(tbs))
    algorithm = der[outer_start + len(tbs) : algorithm_end]
    signature = signer.sign(tbs, hash_algorithm)
    return x509.load_der_x509_certificate(sequence(tbs, algorithm, bit_string(signature)))
