"""The server's ``NodeAttestor "tpm_devid"``: a DevID certificate whose key lives in a genuine TPM.

Every attestation runs SPIRE's checks, in SPIRE's order and with its messages:

1. the DevID certificate chains to ``devid_ca_path``;
2. the EK certificate chains to ``endorsement_ca_path`` and certifies the EK public area sent;
3. the attestation key (AK) signed a ``TPM2_Certify`` of the DevID key: both are in one TPM;
4. the agent signs a fresh nonce with the DevID key (proof of possession), and unwraps a
   credential made for the AK under the EK (``TPM2_ActivateCredential``): the AK, hence the
   DevID key, is in the TPM whose EK the manufacturer certified.

Two checks SPIRE lacks are made as well (docs/compatibility.md): the DevID certificate must
certify the very key the TPM certified, and the AK must be a restricted signing key fixed to
its TPM. Nothing here needs a TPM library: the structures are decoded by
:mod:`pyspire_tpm_devid.structures` and the credential is made by
:mod:`pyspire_tpm_devid.credential`, with ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, InvalidArgument, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.spiffe.pem import der_certificate, pem_certificates

from pyspire_tpm_devid import wire
from pyspire_tpm_devid.chains import ChainError, verified_chains
from pyspire_tpm_devid.credential import make_credential
from pyspire_tpm_devid.structures import (
    ALG_RSASSA,
    FIXED_TPM,
    RESTRICTED,
    SIGN,
    Public,
    StructureError,
    hash_for,
    parse_attestation,
    parse_public,
    parse_signature,
)

__all__ = ["PLUGIN_NAME", "ServerTpmDevId", "ServerTpmDevIdConfig", "fingerprint", "selector_values"]

PLUGIN_NAME = "tpm_devid"
NONCE_BYTES = 32
"""SPIRE's proof-of-possession nonce size."""

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class ServerTpmDevIdConfig:
    """``plugin_data`` of the server's ``NodeAttestor "tpm_devid"``; both paths are required."""

    devid_ca_path: str = ""
    endorsement_ca_path: str = ""


def fingerprint(certificate: x509.Certificate) -> str:
    """SPIRE's name for a certificate: the hex SHA-1 of its DER encoding."""
    return hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324 -- SPIRE's


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def selector_values(leaf: x509.Certificate, chains: list[list[x509.Certificate]]) -> tuple[str, ...]:
    """SPIRE's selectors: the leaf's subject and issuer CN, and each CA of every chain once."""
    values = []
    if subject := _common_name(leaf.subject):
        values.append(f"subject:cn:{subject}")
    if issuer := _common_name(leaf.issuer):
        values.append(f"issuer:cn:{issuer}")
    seen: set[str] = set()
    for chain in chains:
        for certificate in chain[1:]:
            value = fingerprint(certificate)
            if value not in seen:
                seen.add(value)
                values.append(f"ca:fingerprint:{value}")
    return tuple(values)


def _bundle(path: str, key: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None
    try:
        return pem_certificates(data)
    except ValueError as err:
        raise PluginConfigError(key, f"{path} holds no readable PEM certificate: {err}") from None


def _same_key(certificate_key: object, public: Public) -> bool:
    if isinstance(certificate_key, rsa.RSAPublicKey) and isinstance(public.key, rsa.RSAPublicKey):
        return certificate_key.public_numbers() == public.key.public_numbers()
    if isinstance(certificate_key, ec.EllipticCurvePublicKey) and isinstance(public.key, ec.EllipticCurvePublicKey):
        return certificate_key.public_numbers() == public.key.public_numbers()
    return False


def _verify_certification(ak: Public, devid: Public, certify_info: bytes, signature: bytes) -> None:
    """The AK signed a TPM2_Certify naming the DevID key (SPIRE's VerifyDevIDCertification)."""
    if not isinstance(ak.key, rsa.RSAPublicKey):
        raise ValueError("only RSA keys are supported")
    if not ak.has(SIGN):
        raise ValueError("not a signing key")
    if not ak.has(RESTRICTED | FIXED_TPM):
        raise ValueError("the attestation key is not a restricted signing key fixed to its TPM")
    if ak.scheme != ALG_RSASSA:
        raise ValueError("the attestation key's signing scheme is not RSASSA")
    hash_name = hash_for(ak.scheme_hash)
    decoded = parse_signature(signature)
    if decoded.hash != ak.scheme_hash:
        raise ValueError("the certification signature does not use the attestation key's hash")
    algorithm = _HASHES[hash_name]()
    try:
        ak.key.verify(
            decoded.value, hashlib.new(hash_name, certify_info).digest(), padding.PKCS1v15(), Prehashed(algorithm)
        )
    except InvalidSignature:
        raise ValueError("crypto/rsa: verification error") from None
    if parse_attestation(certify_info).certified_name != devid.name:
        raise ValueError("certify failed")


def _verify_nonce_signature(certificate: x509.Certificate, nonce: bytes, signature: bytes) -> None:
    """The DevID key signed ``nonce`` (SHA-256, PKCS#1 v1.5 or ECDSA), as SPIRE checks it."""
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, nonce, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        else:
            raise ValueError(f"unsupported private key type {type(key).__name__}")
    except InvalidSignature:
        raise ValueError("the nonce signature is not the DevID key's") from None


class ServerTpmDevId:
    """Verifies DevID certificates, their residency in a trusted TPM, and proof of their keys."""

    def __init__(self) -> None:
        self._devid_roots: list[x509.Certificate] | None = None
        self._ek_roots: list[x509.Certificate] = []

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerTpmDevIdConfig, plugin_data)
        if not config.devid_ca_path:
            raise PluginConfigError("devid_ca_path", "devid_ca_path is required")
        if not config.endorsement_ca_path:
            raise PluginConfigError("endorsement_ca_path", "endorsement_ca_path is required")
        devid_roots = _bundle(config.devid_ca_path, "devid_ca_path")
        self._ek_roots = _bundle(config.endorsement_ca_path, "endorsement_ca_path")
        self._devid_roots = devid_roots

    def _devid_chain(self, data: wire.AttestationData) -> tuple[x509.Certificate, list[list[x509.Certificate]]]:
        assert self._devid_roots is not None
        if not data.devid_chain:
            raise InvalidArgument("no DevID certificate to attest")
        try:
            leaf = der_certificate(data.devid_chain[0])
        except ValueError as err:
            raise InvalidArgument(f"unable to parse DevID certificate: {err}") from None
        intermediates = []
        for index, der in enumerate(data.devid_chain[1:]):
            try:
                intermediates.append(der_certificate(der))
            except ValueError as err:
                raise InvalidArgument(f"unable to parse DevID intermediate certificate {index}: {err}") from None
        try:
            chains = verified_chains(leaf, intermediates, self._devid_roots)
        except ChainError as err:
            raise InvalidArgument(f"unable to verify DevID signature: verification failed: {err}") from None
        return leaf, chains

    def _residency_challenge(self, data: wire.AttestationData, leaf: x509.Certificate) -> tuple[wire.Challenge, bytes]:
        """Checks 2 and 3; the challenge, and the secret its credential wraps (SPIRE's verifyDevIDResidency)."""
        for blob, what in (
            (data.ak_public, "attestation key public blob"),
            (data.devid_public, "DevID key public blob"),
            (data.ek_certificate, "endorsement certificate"),
            (data.ek_public, "endorsement key public blob"),
        ):
            if not blob:
                raise InvalidArgument(f"missing {what}")
        try:
            ek_certificate = der_certificate(data.ek_certificate)
        except ValueError as err:
            raise InvalidArgument(f"cannot parse endorsement certificate: {err}") from None
        try:
            devid = parse_public(data.devid_public, "DevID key public blob")
        except StructureError as err:
            raise InvalidArgument(f"cannot decode DevID key public blob: {err}") from None
        try:
            ak = parse_public(data.ak_public, "attestation key public blob")
        except StructureError as err:
            raise InvalidArgument(f"cannot decode attestation key public blob: {err}") from None
        try:
            ek = parse_public(data.ek_public, "endorsement key public blob")
        except StructureError:
            raise InvalidArgument("cannot decode endorsement key public blob") from None
        if not _same_key(leaf.public_key(), devid):
            raise InvalidArgument("the DevID certificate does not certify the DevID key public blob")
        if not (isinstance(ek.key, rsa.RSAPublicKey) and isinstance(ek_certificate.public_key(), rsa.RSAPublicKey)):
            raise InvalidArgument(
                "public key in EK certificate differs from public key created via EK template: "
                "key from certificate is not an RSA key"
            )
        if not _same_key(ek_certificate.public_key(), ek):
            raise InvalidArgument(
                "public key in EK certificate differs from public key created via EK template: modulus mismatch"
            )
        try:
            verified_chains(ek_certificate, (), self._ek_roots)
        except ChainError as err:
            raise InvalidArgument(
                f"cannot verify EK signature: endorsement certificate verification failed: {err}"
            ) from None
        try:
            _verify_certification(ak, devid, data.certify_info, data.certify_signature)
        except ValueError as err:
            raise InvalidArgument(f"cannot verify that DevID is in the same TPM than AK: {err}") from None
        try:
            wrapped = make_credential(ek, ak.name)
        except StructureError as err:
            raise InvalidArgument(f"cannot generate credential activation challenge: {err}") from None
        return wire.Challenge(os.urandom(NONCE_BYTES), wrapped.credential, wrapped.secret), wrapped.expected

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        if self._devid_roots is None:
            raise FailedPrecondition("not configured")
        if not payload:
            raise InvalidArgument("missing attestation payload")
        try:
            data = wire.read_attestation_data(payload)
        except wire.WireError as err:
            raise InvalidArgument(f"unable to unmarshall attestation data: {err}") from None
        leaf, chains = self._devid_chain(data)
        sent, expected = self._residency_challenge(data, leaf)
        try:
            answer = wire.read_answer(challenge(sent.encode()))
        except wire.WireError as err:
            raise InvalidArgument(f"unable to unmarshall challenges response: {err}") from None
        try:
            _verify_nonce_signature(leaf, sent.nonce, answer.nonce_signature)
        except ValueError as err:
            raise InvalidArgument(f"devID challenge verification failed: {err}") from None
        if not hmac.compare_digest(expected, answer.credential):
            raise InvalidArgument("credential activation failed: nonces are different")
        path = f"/{PLUGIN_NAME}/{fingerprint(leaf)}"
        return AttestationResult(path, selector_values(leaf, chains), can_reattest=True)
