"""Verifying the RSA-2048 PKCS #7 signature EC2 puts on an instance identity document.

IMDS serves ``dynamic/instance-identity/rsa2048``: a base64 CMS SignedData (no PEM armour)
that carries the document itself as its content, signed by the key of the region's AWS
certificate. The signer's certificate is not embedded; the verifier supplies it. Verifying
means: the content is present, the digest in the signed attributes matches it, and the RSA
PKCS #1 v1.5 signature over those attributes verifies with the region's public key. Only the
bytes returned from here are trusted: a document sent beside the signature is not.

``cryptography`` builds PKCS #7 but does not verify it, so the structure is read with
``asn1crypto`` and the signature checked with ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from asn1crypto import cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["MalformedSignature", "SignatureError", "decode_signature", "verified_content"]

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    # SHA-1 stays accepted for the digest of documents AWS itself produced and signs;
    # the signature key is RSA-2048 either way.
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_SET_OF = 0x31


class SignatureError(ValueError):
    """The signature does not verify; the message says why."""


class MalformedSignature(SignatureError):
    """The signature cannot even be read."""


def decode_signature(text: str) -> bytes:
    """The DER of a signature as IMDS serves it (base64, possibly wrapped over lines)."""
    body = "".join(text.replace("-----BEGIN PKCS7-----", "").replace("-----END PKCS7-----", "").split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSignature("the signature is not valid base64") from None


def _digest(data: bytes, algorithm: type[hashes.HashAlgorithm]) -> bytes:
    hasher = hashes.Hash(algorithm())
    hasher.update(data)
    return hasher.finalize()


def verified_content(signature_der: bytes, certificate: x509.Certificate) -> bytes:
    """The content ``signature_der`` signs, once verified against ``certificate``'s key."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("the region certificate does not hold an RSA key")
    try:
        info = cms.ContentInfo.load(signature_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise MalformedSignature("the signature is not a PKCS #7 SignedData")
        signed = info["content"]
        encapsulated = signed["encap_content_info"]
        if encapsulated["content_type"].native != "data" or encapsulated["content"].native is None:
            raise MalformedSignature("the signature carries no document")
        content: bytes = encapsulated["content"].native
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise MalformedSignature(f"expected one signer, found {len(signers)}")
        signer = signers[0]
        digest_name = signer["digest_algorithm"]["algorithm"].native
        signature: bytes = signer["signature"].native
        signed_attributes = signer["signed_attrs"]
        if isinstance(signed_attributes, asn1_core.Void):
            attributes: dict[str, Any] = {}
        else:
            attributes = {attribute["type"].native: attribute["values"].native for attribute in signed_attributes}
        attributes_der = signed_attributes.dump() if attributes else b""
    except SignatureError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise MalformedSignature(f"the signature cannot be parsed: {err}") from None

    algorithm = _DIGESTS.get(digest_name)
    if algorithm is None:
        raise SignatureError(f"unsupported digest algorithm {digest_name}")
    if attributes:
        # With signed attributes, the signature covers their DER (as a SET OF, not the
        # [0] IMPLICIT tag they travel under) and they carry the content's digest.
        digests = attributes.get("message_digest")
        if digests is None or len(digests) != 1:
            raise SignatureError("the signed attributes carry no message digest")
        if not isinstance(digests[0], bytes) or not hmac.compare_digest(digests[0], _digest(content, algorithm)):
            raise SignatureError("the document does not match the digest that was signed")
        content_types = attributes.get("content_type")
        if content_types is not None and content_types != ["data"]:
            raise SignatureError("the signed content type is not data")
        signed_bytes = bytes([_SET_OF]) + attributes_der[1:]
    else:
        signed_bytes = content
    try:
        public_key.verify(signature, signed_bytes, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SignatureError("the signature does not verify with the region's AWS certificate") from None
    return content
