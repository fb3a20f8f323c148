"""The attested document's checks: Azure's signature, Azure's certificates, Azure's root.

IMDS signs ``{"nonce", "vmId", "subscriptionId", ...}`` as a PKCS#7 SignedData carrying the
signing certificate. As SPIRE does: exactly one signer, whose certificate is named
``metadata.azure.com`` and issued by ``Microsoft Azure RSA TLS Issuing CA NN``; that issuer is
fetched from the certificate's CA Issuers URL (only from the expected host), must itself be
issued by ``DigiCert Global Root G2``, and the chain must end at a trusted root (DigiCert
Global Root G2, plus any ``trust_bundle_path`` adds). Nothing in the content is read before
the signature and the chain hold. Every failure is a :class:`DocumentRefused` naming the check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import certifi
from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from pyspire.spiffe.pem import der_certificate, pem_blocks, pem_certificates

__all__ = [
    "AZURE_ROOT_NAME",
    "DEFAULT_CA_ISSUERS_HOST",
    "DocumentContent",
    "DocumentRefused",
    "DocumentVerifier",
    "default_roots",
]

AZURE_SIGNER_NAME = re.compile(r"^metadata\.azure\.com$")
AZURE_ISSUER_NAME = re.compile(r"^Microsoft Azure RSA TLS Issuing CA \d{2}$")
AZURE_ROOT_NAME = "DigiCert Global Root G2"
DEFAULT_CA_ISSUERS_HOST = "www.microsoft.com"
MAX_CERTIFICATE_BYTES = 16 * 1024
FETCH_TIMEOUT_SECONDS = 10.0

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class DocumentRefused(Exception):
    """The attested document failed a check; the message says which."""


@dataclass(frozen=True)
class DocumentContent:
    """The signed content's fields the attestation uses."""

    subscription_id: str
    vm_id: str
    nonce: str


def default_roots() -> list[x509.Certificate]:
    """DigiCert Global Root G2 from certifi's Mozilla bundle (Azure's attested-data chain ends there)."""
    roots = []
    for _, der in pem_blocks(Path(certifi.where()).read_bytes(), {"CERTIFICATE"}):
        try:
            certificate = der_certificate(der)
        except ValueError:  # the bundle's few roots with serial 0: not the one wanted
            continue
        if _common_name(certificate.subject) == AZURE_ROOT_NAME:
            roots.append(certificate)
    return roots


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = values[0].value if values else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _fetch_certificate(url: str) -> bytes:
    request = urllib.request.Request(url)  # noqa: S310 - the scheme is checked by the caller
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
            body: bytes = response.read(MAX_CERTIFICATE_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise DocumentRefused(f"failed to fetch intermediate certificate, status: {err.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise DocumentRefused(f"failed to fetch intermediate certificate: {getattr(err, 'reason', err)}") from None
    if len(body) > MAX_CERTIFICATE_BYTES:
        raise DocumentRefused(f"the intermediate certificate is larger than {MAX_CERTIFICATE_BYTES} bytes")
    return body


class DocumentVerifier:
    """Verifies attested documents against ``roots``, fetching issuers only from ``ca_issuers_host``."""

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        ca_issuers_host: str = DEFAULT_CA_ISSUERS_HOST,
        fetch: Callable[[str], bytes] = _fetch_certificate,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._roots = list(roots)
        self._ca_issuers_host = ca_issuers_host
        self._fetch = fetch
        self._now = now

    def verify(self, signature_b64: str) -> DocumentContent:
        """The content of a document whose signature and chain hold; :class:`DocumentRefused` otherwise."""
        if not signature_b64:
            raise DocumentRefused("missing signature in attested document")
        try:
            der = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError) as err:
            raise DocumentRefused(f"failed to decode signature: {err}") from None
        content, signer, certificate = self._parse(der)
        intermediate = self._intermediate(certificate)
        self._check_signature(content, signer, certificate)
        self._check_names(certificate, intermediate)
        self._check_chain(certificate, intermediate)
        return self._read_content(content)

    @staticmethod
    def _parse(der: bytes) -> tuple[bytes, cms.SignerInfo, x509.Certificate]:
        try:
            info = cms.ContentInfo.load(der, strict=True)
            if info["content_type"].native != "signed_data":
                raise DocumentRefused("the PKCS7 signature is not SignedData")
            signed = info["content"]
            content = signed["encap_content_info"]["content"].native
            signers = list(signed["signer_infos"])
            bag = [choice.chosen for choice in signed["certificates"] or [] if choice.name == "certificate"]
        except DocumentRefused:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise DocumentRefused(f"failed to parse PKCS7 signature: {err}") from None
        if not isinstance(content, bytes) or not content:
            raise DocumentRefused("the PKCS7 signature carries no content")
        if not bag:
            raise DocumentRefused("no certificates found in PKCS7 signature")
        if len(signers) != 1:
            raise DocumentRefused("expected exactly one signer certificate in PKCS7 signature")
        signer = signers[0]
        sid = signer["sid"]
        if sid.name != "issuer_and_serial_number":
            raise DocumentRefused("the signer is not named by issuer and serial number")
        wanted = sid.chosen
        matches = [
            cert
            for cert in bag
            if cert.issuer == wanted["issuer"] and cert.serial_number == wanted["serial_number"].native
        ]
        if len(matches) != 1:
            raise DocumentRefused("expected exactly one signer certificate in PKCS7 signature")
        try:
            certificate = der_certificate(matches[0].dump())
        except ValueError as err:
            raise DocumentRefused(f"the signing certificate cannot be parsed: {err}") from None
        return content, signer, certificate

    def _intermediate(self, certificate: x509.Certificate) -> x509.Certificate:
        try:
            access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        except x509.ExtensionNotFound:
            raise DocumentRefused(
                "failed to get intermediate certificate: no CA Issuers URL found in certificate"
            ) from None
        urls = [
            entry.access_location.value
            for entry in access
            if entry.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(entry.access_location, x509.UniformResourceIdentifier)
        ]
        if not urls:
            raise DocumentRefused("failed to get intermediate certificate: no CA Issuers URL found in certificate")
        url = urllib.parse.urlsplit(urls[0])
        if url.scheme not in ("http", "https") or url.netloc != self._ca_issuers_host:
            raise DocumentRefused(
                f'failed to get intermediate certificate: CA Issuers URL host "{url.netloc}" '
                f'does not match expected value "{self._ca_issuers_host}"'
            )
        body = self._fetch(urls[0])
        try:
            return der_certificate(body) if not body.lstrip().startswith(b"-----") else pem_certificates(body)[0]
        except ValueError as err:
            raise DocumentRefused(f"failed to parse intermediate certificate: {err}") from None

    @staticmethod
    def _check_signature(content: bytes, signer: cms.SignerInfo, certificate: x509.Certificate) -> None:
        digest_name = signer["digest_algorithm"]["algorithm"].native
        if digest_name not in _HASHES:
            raise DocumentRefused(f'signature verification failed: digest algorithm "{digest_name}" is not supported')
        algorithm = _HASHES[digest_name]()
        attributes = signer["signed_attrs"]
        if attributes.native is None:
            signed = content
        else:
            digests = [attr["values"][0].native for attr in attributes if attr["type"].native == "message_digest"]
            types = [attr["values"][0].native for attr in attributes if attr["type"].native == "content_type"]
            hasher = hashes.Hash(algorithm)
            hasher.update(content)
            if len(digests) != 1 or not hmac.compare_digest(digests[0], hasher.finalize()):
                raise DocumentRefused("signature verification failed: the content digest does not match")
            if types != ["data"]:
                raise DocumentRefused("signature verification failed: the signed content type is not data")
            # The signature covers the attributes as a SET OF, not in their [0] IMPLICIT wire form.
            signed = b"\x31" + attributes.dump()[1:]
        public_key = certificate.public_key()
        signature = signer["signature"].native
        try:
            if isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, signed, padding.PKCS1v15(), algorithm)
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, signed, ec.ECDSA(algorithm))
            else:
                raise DocumentRefused("signature verification failed: the signing key type is not supported")
        except InvalidSignature:
            raise DocumentRefused(
                "signature verification failed: the signature is not the signing certificate's"
            ) from None

    @staticmethod
    def _check_names(certificate: x509.Certificate, intermediate: x509.Certificate) -> None:
        checks = (
            ("signing certificate subject", certificate.subject, AZURE_SIGNER_NAME),
            ("signing certificate issuer", certificate.issuer, AZURE_ISSUER_NAME),
            ("intermediate certificate issuer", intermediate.issuer, re.compile(f"^{re.escape(AZURE_ROOT_NAME)}$")),
            ("intermediate certificate subject", intermediate.subject, AZURE_ISSUER_NAME),
        )
        for what, name, pattern in checks:
            common_name = _common_name(name)
            if not common_name:
                raise DocumentRefused(f"azure certificate validation failed: {what} has no common name")
            if not pattern.match(common_name):
                raise DocumentRefused(
                    f'azure certificate validation failed: {what} "{common_name}" '
                    f'does not match expected pattern "{pattern.pattern}"'
                )

    def _check_chain(self, certificate: x509.Certificate, intermediate: x509.Certificate) -> None:
        now = self._now()
        for what, cert in (("signing", certificate), ("intermediate", intermediate)):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise DocumentRefused(f"certificate chain validation failed: the {what} certificate is not valid now")
        try:
            constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise DocumentRefused("certificate chain validation failed: the intermediate certificate is not a CA")
        try:
            certificate.verify_directly_issued_by(intermediate)
        except (ValueError, TypeError, InvalidSignature):
            raise DocumentRefused(
                "certificate chain validation failed: signing certificate was not issued by intermediate certificate"
            ) from None
        for root in self._roots:
            if root.subject != intermediate.issuer:
                continue
            if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
                continue
            try:
                intermediate.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return
        raise DocumentRefused("certificate chain validation failed: the chain does not end at a trusted root")

    @staticmethod
    def _read_content(content: bytes) -> DocumentContent:
        try:
            raw = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DocumentRefused(f"failed to unmarshal attested document payload: {err}") from None
        if not isinstance(raw, dict):
            raise DocumentRefused("failed to unmarshal attested document payload: not a JSON object")
        fields = {key: raw.get(key, "") for key in ("subscriptionId", "vmId", "nonce")}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise DocumentRefused(f'failed to unmarshal attested document payload: "{key}" is not a string')
        return DocumentContent(fields["subscriptionId"], fields["vmId"], fields["nonce"])
