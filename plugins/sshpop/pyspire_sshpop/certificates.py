"""OpenSSH host certificates and the CA keys that vouch for them, judged as SPIRE's sshpop does.

SPIRE checks an agent's certificate with Go's ``ssh.CertChecker`` as a host key presented for
its first principal: it must be a host certificate (not a user certificate), signed by a key
among the trusted CAs, carry no critical option other than ``source-address``, be valid now
(``valid_after`` <= now < ``valid_before``, where ``valid_before`` 2^64-1 means forever and a
time past 2^63 is out of range), and its first principal must be a host name. The node's name
comes from the first principal and from the certificate's fingerprint: the SHA-256 of the
whole certificate in SSH wire format, in unpadded URL-safe base64.

Parsing and signature checks are ``cryptography``'s. It reads RSA, ECDSA (P-256, P-384,
P-521) and Ed25519 keys; certificates signed with DSA, and CA or host keys held in security
keys (``sk-*``), are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from typing import TypeGuard

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
    load_ssh_public_key,
)
from cryptography.hazmat.primitives.serialization.ssh import SSHPublicKeyTypes, serialize_ssh_public_key

__all__ = [
    "CertificateRefused",
    "HostCertificate",
    "SigningKey",
    "TrustedAuthorities",
    "certificate_from_wire",
    "fingerprint",
    "hostname",
    "parse_authorized_key",
    "read_host_certificate",
]

CERT_SUFFIX = b"-cert-v01@openssh.com"
KEY_TYPES = frozenset(
    {b"ssh-rsa", b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384", b"ecdsa-sha2-nistp521"}
)
FOREVER = 2**64 - 1
SOURCE_ADDRESS = b"source-address"
MAX_CERTIFICATE_BYTES = 16 * 1024
"""A host certificate with an 8192-bit RSA key and CA and many principals stays well below this."""

SigningKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CertificateRefused(Exception):
    """The certificate is well formed but not acceptable; the message says which rule it breaks."""


@dataclass(frozen=True)
class HostCertificate:
    """A parsed certificate with the wire bytes it came from (what the fingerprint hashes)."""

    certificate: SSHCertificate
    wire: bytes
    kind: SSHCertificateType
    principals: tuple[str, ...]


def _key_type(blob: bytes) -> bytes:
    """The leading SSH string of a wire-format key or certificate: its type name."""
    if len(blob) < 4:
        raise ValueError("too short to hold a key type")
    length = int.from_bytes(blob[:4], "big")
    if length == 0 or length > 64 or len(blob) < 4 + length:
        raise ValueError("the key type field is malformed")
    return blob[4 : 4 + length]


def _supported(key: object) -> TypeGuard[SigningKey]:
    return isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1)
    )


def certificate_from_wire(wire: bytes) -> HostCertificate:
    """Parse a certificate in SSH wire format; ``ValueError`` says why it is not one."""
    if len(wire) > MAX_CERTIFICATE_BYTES:
        raise ValueError(f"larger than {MAX_CERTIFICATE_BYTES} bytes")
    key_type = _key_type(wire)
    if not key_type.endswith(CERT_SUFFIX):
        raise ValueError(f'"{key_type.decode(errors="replace")}" is a plain key, not a certificate')
    if key_type[: -len(CERT_SUFFIX)] not in KEY_TYPES:
        raise ValueError(f'certificate type "{key_type.decode(errors="replace")}" is not supported')
    try:
        certificate = load_ssh_public_identity(key_type + b" " + base64.b64encode(wire))
    except (ValueError, UnsupportedAlgorithm) as err:
        raise ValueError(str(err) or type(err).__name__) from None
    if not isinstance(certificate, SSHCertificate):
        raise ValueError("not a certificate")
    try:
        kind = certificate.type
    except ValueError:
        raise ValueError("the certificate is neither a user nor a host certificate") from None
    try:
        principals = tuple(p.decode() for p in certificate.valid_principals)
    except UnicodeDecodeError:
        raise ValueError("a principal is not UTF-8") from None
    return HostCertificate(certificate, wire, kind, principals)


def read_host_certificate(text: bytes) -> HostCertificate:
    """A certificate file as ``ssh-keygen -s`` writes it: ``<type> <base64> [comment]``."""
    fields = text.split()
    if len(fields) < 2:
        raise ValueError("expected a line <type> <base64> [comment]")
    try:
        wire = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the certificate is not valid base64") from None
    parsed = certificate_from_wire(wire)
    if fields[0] != _key_type(wire):
        raise ValueError(f'the line says "{fields[0].decode(errors="replace")}" but holds another type')
    return parsed


def fingerprint(certificate: HostCertificate) -> str:
    """SPIRE's agent ID component: unpadded URL-safe base64 of the SHA-256 of the certificate's wire bytes."""
    digest = hashlib.sha256(certificate.wire).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _skip_options(line: str) -> str:
    """The line after a leading authorized_keys options field (``cert-authority,from="a b"``)."""
    in_quote = False
    for index, char in enumerate(line):
        if char in " \t" and not in_quote:
            return line[index:].lstrip(" \t")
        if char == '"' and (index == 0 or line[index - 1] != "\\"):
            in_quote = not in_quote
    raise ValueError("an options field without a key after it (or an unmatched quote)")


def _key_from_fields(line: str) -> SigningKey:
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("no key")
    declared = fields[0].encode()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if _key_type(blob) != declared:
        raise ValueError(f'the line says "{fields[0]}" but the key is of another type')
    if declared.endswith(CERT_SUFFIX):
        raise ValueError("a certificate is not a CA key")
    if declared not in KEY_TYPES:
        raise ValueError(f'key type "{fields[0]}" is not supported (RSA, ECDSA and Ed25519 are)')
    try:
        key = load_ssh_public_key(declared + b" " + fields[1].encode())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise ValueError(f"the key cannot be read: {err}") from None
    if not _supported(key):
        raise ValueError(f'key type "{fields[0]}" is not supported')
    return key


def parse_authorized_key(line: str) -> SigningKey:
    """One CA key in ``authorized_keys`` format, with or without leading options and a comment."""
    line = line.strip()
    if not line:
        raise ValueError("empty")
    try:
        return _key_from_fields(line)
    except ValueError as err:
        error = err
    try:
        return _key_from_fields(_skip_options(line))
    except ValueError:
        raise error from None


def _canonical(key: SSHPublicKeyTypes) -> bytes:
    """The key re-encoded, so two encodings of the same key compare equal (Go compares fingerprints of re-encodings)."""
    return serialize_ssh_public_key(key)


class TrustedAuthorities:
    """The CA keys whose host certificates are accepted (``cert_authorities`` and ``cert_authorities_path``)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self._keys = {_canonical(key) for key in keys}

    def check(self, host: HostCertificate) -> None:
        """Raise :class:`CertificateRefused` unless ``host`` is a host certificate a trusted CA issued, valid now."""
        certificate = host.certificate
        if host.kind != SSHCertificateType.HOST:
            raise CertificateRefused("the certificate is a user certificate, not a host certificate")
        principals = host.principals
        if not principals:
            raise CertificateRefused("the certificate has no valid principals")
        if any(c in principals[0] for c in ":[]"):
            raise CertificateRefused(f'the first principal "{principals[0]}" is not a host name')
        try:
            signer = certificate.signature_key()
        except (ValueError, UnsupportedAlgorithm):
            signer = None
        if signer is None or not _supported(signer) or _canonical(signer) not in self._keys:
            raise CertificateRefused("the certificate is not signed by a trusted CA (cert_authorities)")
        for option in certificate.critical_options:
            if option != SOURCE_ADDRESS:
                raise CertificateRefused(
                    f'the certificate has the unsupported critical option "{option.decode(errors="replace")}"'
                )
        unix_now = int(time.time())
        if certificate.valid_after >= 2**63 or unix_now < certificate.valid_after:
            raise CertificateRefused(f"the certificate is not valid yet (valid after {certificate.valid_after})")
        if certificate.valid_before != FOREVER and (
            certificate.valid_before >= 2**63 or unix_now >= certificate.valid_before
        ):
            raise CertificateRefused(f"the certificate has expired (valid before {certificate.valid_before})")
        try:
            certificate.verify_cert_signature()
        except (InvalidSignature, ValueError):
            raise CertificateRefused("the CA's signature on the certificate does not verify") from None


def hostname(host: HostCertificate, canonical_domain: str) -> str:
    """The first principal, less ``.<canonical_domain>`` when one is configured (which it must then end with)."""
    principal = host.principals[0]
    if not canonical_domain:
        return principal
    suffix = "." + canonical_domain
    if not principal.endswith(suffix):
        raise CertificateRefused(f'the certificate\'s first principal "{principal}" is not in domain "{suffix}"')
    return principal[: -len(suffix)]
