"""Reading certificates and keys in the encodings SPIFFE documents use.

PEM files may hold other blocks (a key next to a certificate): only the wanted type is
taken, as go-spiffe does. DER "chains" are plain concatenations of certificates, as the
Workload API carries them, so they are split by their ASN.1 lengths.
"""

from __future__ import annotations

import base64
import re
import warnings
from collections.abc import Iterator
from typing import Final

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

__all__ = ["PemError", "der_certificate", "der_certificates", "pem_blocks", "pem_certificates", "split_der"]

# cryptography still loads a certificate whose serial is not positive, with a warning that a
# later release will refuse it; der_certificate refuses it now, so the warning says nothing
# (only for the loads made here).
warnings.filterwarnings(
    "ignore",
    message="Parsed a serial number which wasn't positive",
    category=CryptographyDeprecationWarning,
    module=__name__,
)

_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n?-----END \1-----", re.DOTALL)


class PemError(ValueError):
    """The bytes are not PEM, or a PEM block is corrupt."""


def pem_blocks(data: bytes, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(type, der)`` for each PEM block whose type is in ``wanted``.

    Raises :class:`PemError` when ``data`` holds no PEM block at all, or a wanted block's
    base64 is corrupt.
    """
    found_any = False
    for match in _PEM_BLOCK.finditer(data):
        found_any = True
        block_type = match.group(1).decode("ascii")
        if block_type not in wanted:
            continue
        try:
            yield block_type, base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except ValueError as err:
            raise PemError(f"corrupt {block_type} PEM block: {err}") from None
    if not found_any:
        raise PemError("no PEM blocks found")


def split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER SEQUENCEs (certificates) into single encodings."""
    items: list[bytes] = []
    position = 0
    while position < len(data):
        if data[position] != 0x30 or position + 2 > len(data):
            raise ValueError(f"not a DER SEQUENCE at byte {position}")
        first = data[position + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or position + 2 + count > len(data):
                raise ValueError(f"bad DER length at byte {position}")
            header = 2 + count
            length = int.from_bytes(data[position + 2 : position + 2 + count], "big")
        end = position + header + length
        if end > len(data):
            raise ValueError(f"truncated DER element at byte {position}")
        items.append(data[position:end])
        position = end
    return items


def der_certificate(der: bytes) -> x509.Certificate:
    """Parse one DER certificate; ValueError when malformed or when its serial is not positive (RFC 5280).

    cryptography reports an unknown version and (lazily, when extensions are first read) a
    repeated extension with exceptions that are not ValueErrors; loading and decoding both here
    turns them into the one error every caller handles.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
    except x509.InvalidVersion as err:
        raise ValueError(f"certificate has unknown version {err.parsed_version}") from None
    if certificate.serial_number <= 0:
        raise ValueError(f"serial number {certificate.serial_number} is not positive (RFC 5280)")
    try:
        certificate.extensions  # noqa: B018 -- decoded for its errors
    except x509.DuplicateExtension as err:
        raise ValueError(f"certificate repeats extension {err.oid.dotted_string} (RFC 5280 §4.2)") from None
    return certificate


def der_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse concatenated DER certificates; ValueError on any malformed one."""
    return [der_certificate(item) for item in split_der(data)]


def pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse every CERTIFICATE block of PEM ``data``; ValueError when there is none or one is malformed.

    Like :func:`der_certificate` (which each block goes through), the one loader for PEM that
    came from outside: cryptography's own PEM loader lets the same non-ValueErrors through.
    """
    certificates = [der_certificate(der) for _, der in pem_blocks(data, {"CERTIFICATE"})]
    if not certificates:
        raise PemError("no CERTIFICATE PEM block found")
    return certificates
