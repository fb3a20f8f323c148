"""The instance identity document, the attestation payload, and the regions' certificates.

The payload is SPIRE's, so agents and servers of either implementation understand each
other: a JSON object with ``document`` (the document as IMDS served it), ``signature`` (the
legacy RSA-1024 signature) and ``rsa2048`` (the PKCS #7 signature). pyspire's server accepts
only the RSA-2048 signature; its agent sends all three.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from pyspire.plugin.errors import InvalidArgument, PluginConfigError
from pyspire.spiffe.pem import pem_certificates

from pyspire_aws_iid.signature import MalformedSignature, SignatureError, decode_signature, verified_content

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_SIGNATURE_BYTES",
    "InstanceIdentity",
    "RegionCertificates",
    "encode_payload",
    "verify_payload",
]

PLUGIN_NAME = "aws_iid"
MAX_DOCUMENT_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_INSTANCE = re.compile(r"^i-[0-9a-f]{8,32}$")
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$")


@dataclass(frozen=True)
class InstanceIdentity:
    """What a verified document says about the instance."""

    account_id: str
    region: str
    instance_id: str
    availability_zone: str
    image_id: str

    @classmethod
    def from_document(cls, document: bytes) -> InstanceIdentity:
        """Read the fields an identity is made of, refusing any that is missing or odd."""
        try:
            fields = json.loads(document)
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("the signed document is not JSON") from None
        if not isinstance(fields, dict):
            raise InvalidArgument("the signed document is not a JSON object")

        def text(name: str, pattern: re.Pattern[str] | None = None) -> str:
            value = fields.get(name)
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"the signed document has no {name}")
            if pattern is not None and not pattern.match(value):
                raise InvalidArgument(f"the signed document's {name} {value!r} is malformed")
            return value

        return cls(
            account_id=text("accountId", _ACCOUNT),
            region=text("region", _REGION),
            instance_id=text("instanceId", _INSTANCE),
            availability_zone=text("availabilityZone"),
            image_id=text("imageId"),
        )


def encode_payload(document: str, signature: str, rsa2048: str) -> bytes:
    """The payload an agent sends."""
    return json.dumps({"document": document, "signature": signature, "rsa2048": rsa2048}).encode()


class RegionCertificates:
    """The AWS certificate for each region's RSA-2048 signatures.

    AWS publishes one certificate per region. They ship with the plugin
    (``region_certificates.json``); ``region_certificates { "<region>" = "<PEM file>" }``
    adds regions or replaces the shipped certificate of a region.
    """

    def __init__(self, overrides: Mapping[str, str]) -> None:
        shipped = json.loads(resources.files(__package__).joinpath("region_certificates.json").read_text())
        self._pem: dict[str, bytes] = {region: pem.encode() for region, pem in shipped.items()}
        for region, path in overrides.items():
            try:
                data = Path(path).read_bytes()
                pem_certificates(data)
            except OSError as err:
                raise PluginConfigError(
                    "region_certificates", f"{region}: cannot read {path}: {err.strerror}"
                ) from None
            except ValueError as err:
                raise PluginConfigError(
                    "region_certificates", f"{region}: {path} is not a PEM certificate: {err}"
                ) from None
            self._pem[region] = data
        self._parsed: dict[str, x509.Certificate] = {}

    def __contains__(self, region: str) -> bool:
        return region in self._pem

    def for_region(self, region: str) -> x509.Certificate:
        """The region's certificate; an unknown region cannot be verified and is refused."""
        certificate = self._parsed.get(region)
        if certificate is None:
            pem = self._pem.get(region)
            if pem is None:
                raise InvalidArgument(f'no AWS certificate is known for region "{region}"')
            certificate = self._parsed[region] = x509.load_pem_x509_certificate(pem)
        return certificate


def _claimed_region(document: str) -> str:
    """The region the unverified document claims: only used to choose the certificate."""
    try:
        fields = json.loads(document)
    except ValueError:
        raise InvalidArgument("the instance identity document is not JSON") from None
    region = fields.get("region") if isinstance(fields, dict) else None
    if not isinstance(region, str) or not _REGION.match(region):
        raise InvalidArgument("the instance identity document names no valid region")
    return region


def verify_payload(payload: bytes, certificates: RegionCertificates) -> InstanceIdentity:
    """Check the payload's signature and return the identity read from the signed bytes."""
    try:
        fields: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("the attestation payload is not JSON") from None
    if not isinstance(fields, dict):
        raise InvalidArgument("the attestation payload must be a JSON object")
    document = fields.get("document")
    rsa2048 = fields.get("rsa2048")
    if not isinstance(document, str) or not document:
        raise InvalidArgument("the attestation payload has no document")
    if len(document) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    if not isinstance(rsa2048, str) or not rsa2048:
        if fields.get("signature"):
            raise InvalidArgument("only RSA-2048 (PKCS #7) signatures are accepted; the payload has none")
        raise InvalidArgument("the attestation payload has no signature")
    if len(rsa2048) > MAX_SIGNATURE_BYTES:
        raise InvalidArgument(f"the signature is larger than {MAX_SIGNATURE_BYTES} bytes")

    certificate = certificates.for_region(_claimed_region(document))
    try:
        content = verified_content(decode_signature(rsa2048), certificate)
    except MalformedSignature as err:
        raise InvalidArgument(f"{err}") from None
    except SignatureError as err:
        raise InvalidArgument(f"{err}") from None
    if content != document.encode():
        # A genuine signature from one instance beside a forged document.
        raise InvalidArgument("the document does not match the signed document")
    return InstanceIdentity.from_document(content)
