"""The built-in ``x509pop`` NodeAttestor: a node proves it holds a certificate's private key.

The agent sends its certificate chain; the server verifies it up to the configured CA bundle
(``ca_bundle_path``/``ca_bundle_paths``), then challenges the agent to sign a fresh random
nonce with the certificate's key and checks that signature. A replayed payload cannot pass:
every attestation signs a different nonce. The agent ID is rendered from
``agent_path_template`` (default ``{{ .PluginName }}/{{ .Fingerprint }}``, the SHA-1 of the
leaf certificate, as SPIRE). Nodes may re-attest with the same certificate.

What is accepted and what the node is called are SPIRE's: chains are verified as Go's
``x509.Verify`` does (CA certificates need basicConstraints, their keyUsage is not looked at;
the leaf must allow digitalSignature), at most ``max_intermediates`` intermediates and RSA keys
of at most ``max_rsa_key_size`` bits are accepted, ``verify_client_ip`` requires the agent's
address among the leaf's IP SANs, and the selectors and template values are SPIRE's
(``serialnumber:<even-length hex>``, ``san:<key>:<value>`` from URI SANs
``x509pop://<trust domain>/<key>/<value>``, ``.URISanSelectors.<key>``).

The challenge and its answer are SPIRE's, so pyspire's and SPIRE's agents and servers attest
to each other: the server sends a 32-byte nonce as ``{"ecdsa_signature": {"nonce"}}`` or
``{"rsa_signature": {"nonce"}}`` (by the leaf's key type), the agent adds a 32-byte nonce of
its own and signs SHA-256(server nonce || agent nonce) — ECDSA answered as ``r`` and ``s``,
RSA as a PSS signature — so a node key never signs bytes chosen by someone else alone
(SPIRE's 0.6.2 fix). Other key types are refused, as SPIRE refuses them.

Only ``mode = "external_pki"`` is offered; SPIRE's ``spiffe`` mode (exchanging an SVID of the
server's own trust domain) is refused at configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.spiffe.pem import der_certificate, pem_certificates

__all__ = ["AgentX509Pop", "ServerX509Pop"]

_log = logging.getLogger(__name__)

PLUGIN_NAME = "x509pop"
DEFAULT_TEMPLATE = "{{ .PluginName }}/{{ .Fingerprint }}"
DEFAULT_MAX_INTERMEDIATES = 4
DEFAULT_MAX_RSA_KEY_SIZE = 8192
MAX_CERTIFICATE_BYTES = 64 * 1024
NONCE_BYTES = 32
_ECDSA, _RSA = "ecdsa_signature", "rsa_signature"
_PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
_PREHASHED = Prehashed(hashes.SHA256())

_EXTENSION_NAMES = {
    ExtensionOID.BASIC_CONSTRAINTS.dotted_string: "basicConstraints",
    ExtensionOID.KEY_USAGE.dotted_string: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE.dotted_string: "extKeyUsage",
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string: "subjectAltName",
    ExtensionOID.NAME_CONSTRAINTS.dotted_string: "nameConstraints",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string: "authorityKeyIdentifier",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string: "subjectKeyIdentifier",
    ExtensionOID.POLICY_CONSTRAINTS.dotted_string: "policyConstraints",
}
_OID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _combined(server_nonce: bytes, agent_nonce: bytes) -> bytes:
    """What the node signs: the digest of both nonces (SPIRE's ``combineNonces``)."""
    return hashlib.sha256(server_nonce + agent_nonce).digest()


def _kind(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _ECDSA
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return _RSA
    raise PermissionDenied(f"unsupported key type {type(key).__name__} (RSA and ECDSA keys are accepted)")


def _expecting(kind: str, what: str) -> str:
    return f"expecting {'ECDSA' if kind == _ECDSA else 'RSA'} {what}"


def _big_endian(value: int) -> bytes:
    """An integer as Go's ``big.Int.Bytes()`` writes it: minimal big-endian, empty for zero."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _sign(private_key: PrivateKeyTypes, digest: bytes, agent_nonce: bytes) -> dict[str, str]:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private_key.sign(digest, ec.ECDSA(_PREHASHED)))
        return {"nonce": _b64(agent_nonce), "r": _b64(_big_endian(r)), "s": _b64(_big_endian(s))}
    if isinstance(private_key, rsa.RSAPrivateKey):
        return {"nonce": _b64(agent_nonce), "signature": _b64(private_key.sign(digest, _PSS_SIGN, _PREHASHED))}
    raise Internal(f"unsupported private key type {type(private_key).__name__}")


def _verify(public_key: PublicKeyTypes, answer: Mapping[str, Any], digest: bytes) -> None:
    """Raises InvalidSignature unless ``answer`` signs ``digest`` with ``public_key``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        r = int.from_bytes(_unb64(answer.get("r"), "r"), "big")
        s = int.from_bytes(_unb64(answer.get("s"), "s"), "big")
        public_key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(_PREHASHED))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(_unb64(answer.get("signature"), "signature"), digest, _PSS_VERIFY, _PREHASHED)
    else:
        raise PermissionDenied(f"unsupported key type {type(public_key).__name__}")


def _load_pem_certificates(path: str, key: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None
    try:
        certificates = pem_certificates(data)
    except ValueError as err:
        raise PluginConfigError(key, f"{path} holds no readable PEM certificate: {err}") from None
    return certificates


def _readable(error: VerificationError) -> str:
    """The verifier's reason with extension OIDs named (``basicConstraints (2.5.29.19)``)."""
    return _OID.sub(
        lambda m: f"{_EXTENSION_NAMES[m.group()]} ({m.group()})" if m.group() in _EXTENSION_NAMES else m.group(),
        str(error),
    )


def serial_number_hex(serial: int) -> str:
    """A serial number as SPIRE writes it: lowercase hex with an even number of digits."""
    digits = format(serial, "x")
    return "0" + digits if len(digits) % 2 else digits


def _rsa_bits(certificate: x509.Certificate) -> int:
    key = certificate.public_key()
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{what} is not valid base64") from None


def _json_object(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return document


# --- server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerX509PopConfig:
    """``plugin_data`` of the server's ``NodeAttestor "x509pop"``."""

    ca_bundle_path: str = ""
    ca_bundle_paths: tuple[str, ...] = field(default=())
    agent_path_template: str = DEFAULT_TEMPLATE
    mode: str = "external_pki"
    max_intermediates: int = DEFAULT_MAX_INTERMEDIATES
    max_rsa_key_size: int = DEFAULT_MAX_RSA_KEY_SIZE
    verify_client_ip: bool = False
    svid_prefix: str | None = None
    spiffe_prefix: str | None = None


def _ca_policy() -> ExtensionPolicy:
    """Go's rules for CA certificates: basicConstraints (cA asserted) required, keyUsage not checked."""
    return ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)


def _require_digital_signature(policy: object, certificate: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    """SPIRE challenges only a leaf whose keyUsage allows digitalSignature."""
    if usage is None or not usage.digital_signature:
        raise ValueError("the node certificate's keyUsage must allow digitalSignature")


class ServerX509Pop:
    """Verifies certificate chains and proof of possession of their keys."""

    def __init__(self) -> None:
        self._roots: list[x509.Certificate] = []
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)
        self._trust_domain = ""
        self._max_intermediates = DEFAULT_MAX_INTERMEDIATES
        self._max_rsa_key_size = DEFAULT_MAX_RSA_KEY_SIZE
        self._verify_client_ip = False

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerX509PopConfig, plugin_data)
        if config.mode != "external_pki":
            raise PluginConfigError("mode", f'"{config.mode}" is not supported: pyspire offers "external_pki" only')
        for key in ("svid_prefix", "spiffe_prefix"):
            if getattr(config, key) is not None:
                raise PluginConfigError(key, 'applies to mode "spiffe" only, which pyspire does not offer')
        if config.ca_bundle_path and config.ca_bundle_paths:
            raise PluginConfigError("ca_bundle_paths", "only one of ca_bundle_path or ca_bundle_paths can be set")
        if config.max_intermediates <= 0:
            raise PluginConfigError("max_intermediates", "must be greater than 0")
        if config.max_rsa_key_size <= 0:
            raise PluginConfigError("max_rsa_key_size", "must be greater than 0")
        paths = [config.ca_bundle_path] if config.ca_bundle_path else list(config.ca_bundle_paths)
        if not paths:
            raise PluginConfigError("ca_bundle_path", "one of ca_bundle_path or ca_bundle_paths is required")
        roots: list[x509.Certificate] = []
        for path in paths:
            roots.extend(
                _load_pem_certificates(path, "ca_bundle_paths" if config.ca_bundle_paths else "ca_bundle_path")
            )
        self._roots = roots
        self._template = AgentPathTemplate(config.agent_path_template)
        self._trust_domain = core.trust_domain.name
        self._max_intermediates = config.max_intermediates
        self._max_rsa_key_size = config.max_rsa_key_size
        self._verify_client_ip = config.verify_client_ip

    def _chain(self, payload: bytes) -> tuple[x509.Certificate, list[x509.Certificate]]:
        document = _json_object(payload, "attestation payload")
        encoded = document.get("certificates")
        if not isinstance(encoded, list) or not encoded:
            raise InvalidArgument("the payload must carry a non-empty certificates list")
        # Counted before anything is decoded: a long chain costs nothing to refuse.
        if len(encoded) - 1 > self._max_intermediates:
            raise InvalidArgument(
                f"too many intermediate certificates ({len(encoded) - 1}; max_intermediates is "
                f"{self._max_intermediates})"
            )
        certificates = []
        for index, item in enumerate(encoded):
            der = _unb64(item, f"certificate {index}")
            if len(der) > MAX_CERTIFICATE_BYTES:
                raise InvalidArgument(f"certificate {index} is larger than {MAX_CERTIFICATE_BYTES} bytes")
            try:
                certificate = der_certificate(der)
            except ValueError as err:
                raise InvalidArgument(f"certificate {index} cannot be parsed: {err}") from None
            bits = _rsa_bits(certificate)
            if bits > self._max_rsa_key_size:
                which = "leaf certificate" if index == 0 else f"intermediate certificate {index - 1}"
                raise InvalidArgument(
                    f"{which} key size too large ({bits} bits; max_rsa_key_size is {self._max_rsa_key_size})"
                )
            certificates.append(certificate)
        return certificates[0], certificates[1:]

    def _verified_chain(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> list[x509.Certificate]:
        ee_policy = ExtensionPolicy.permit_all().require_present(
            x509.KeyUsage, Criticality.AGNOSTIC, _require_digital_signature
        )
        verifier = (
            PolicyBuilder()
            .store(Store(self._roots))
            .time(datetime.now(UTC))
            .max_chain_depth(max(8, self._max_intermediates + 1))
            .extension_policies(ca_policy=_ca_policy(), ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            return list(verifier.verify(leaf, intermediates).chain)
        except VerificationError as err:
            raise PermissionDenied(f"certificate verification failed: {_readable(err)}") from None

    def _check_client_ip(self, leaf: x509.Certificate, client_ip: str) -> None:
        """``verify_client_ip``: the agent's address (the server's immediate peer) is one of the leaf's IP SANs."""
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            raise Internal(f"client IP not available for verification ({client_ip!r})") from None
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            addresses = sans.get_values_for_type(x509.IPAddress)
        except x509.ExtensionNotFound:
            addresses = []
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if not any(candidate in (address, mapped) for candidate in addresses):
            raise PermissionDenied(f"client IP {mapped or address} does not match any certificate IP SAN")

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge, client_ip: str) -> AttestationResult:
        leaf, intermediates = self._chain(payload)
        chain = self._verified_chain(leaf, intermediates)
        if self._verify_client_ip:
            self._check_client_ip(leaf, client_ip)

        public_key = leaf.public_key()
        kind = _kind(public_key)
        nonce = os.urandom(NONCE_BYTES)
        sent = {_RSA: None, _ECDSA: None, kind: {"nonce": _b64(nonce)}}
        answer = _json_object(challenge(json.dumps(sent).encode()), "challenge response").get(kind)
        if not isinstance(answer, dict):
            raise InvalidArgument(_expecting(kind, "response"))
        agent_nonce = _unb64(answer.get("nonce"), "response nonce")
        if len(agent_nonce) != NONCE_BYTES:
            raise InvalidArgument(f"the response nonce must be {NONCE_BYTES} bytes")
        try:
            _verify(public_key, answer, _combined(nonce, agent_nonce))
        except (InvalidSignature, ValueError):
            raise PermissionDenied(
                "challenge response verification failed: the signature does not match the certificate's key"
            ) from None

        leaf_der = leaf.public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha1(leaf_der, usedforsecurity=False).hexdigest()
        # Go's pkix.Name keeps the last common name of the subject.
        common_names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(common_names[-1].value) if common_names else ""
        serial_hex = serial_number_hex(leaf.serial_number)
        san_selectors = self._san_selectors(leaf)
        selectors = []
        if common_name:
            selectors.append(f"subject:cn:{common_name}")
        for certificate in chain[1:]:
            der = certificate.public_bytes(serialization.Encoding.DER)
            selectors.append(f"ca:fingerprint:{hashlib.sha1(der, usedforsecurity=False).hexdigest()}")
        selectors.append(f"serialnumber:{serial_hex}")
        selectors.extend(f"san:{key}:{value}" for key, value in san_selectors.items())
        path = self._template.render(
            {
                "PluginName": PLUGIN_NAME,
                "Fingerprint": fingerprint,
                "TrustDomain": self._trust_domain,
                "Subject": {"CommonName": common_name},
                "SerialNumberHex": serial_hex,
                "URISanSelectors": san_selectors,
            }
        )
        return AttestationResult(path, tuple(selectors), can_reattest=True)

    def _san_selectors(self, leaf: x509.Certificate) -> dict[str, str]:
        """``x509pop://<trust domain>/<key>/<value>`` URI SANs as {key: value} (a later key wins, as in SPIRE)."""
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return {}
        prefix = f"x509pop://{self._trust_domain}/"
        found: dict[str, str] = {}
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if not uri.startswith(prefix):
                continue
            key, _, value = unquote(urlsplit(uri).path).strip("/").partition("/")
            if not key or not value:
                _log.warning("Cannot extract x509pop san selectors", extra={"uri": uri})
                continue
            found[key] = value
        return found


# --- agent -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentX509PopConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "x509pop"``."""

    private_key_path: str
    certificate_path: str
    intermediates_path: str = ""


class AgentX509Pop:
    """Presents the node's certificate and signs the server's nonces with its key.

    The files are read again at every attestation, so a renewed certificate is picked up.
    """

    def __init__(self) -> None:
        self._config: AgentX509PopConfig | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentX509PopConfig, plugin_data)
        self._config = config
        self._load()  # fail at start, not at the first attestation

    def _load(self) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
        assert self._config is not None
        config = self._config
        try:
            key_data = Path(config.private_key_path).read_bytes()
        except OSError as err:
            raise PluginConfigError(
                "private_key_path", f"cannot read {config.private_key_path}: {err.strerror}"
            ) from None
        try:
            private_key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as err:
            raise PluginConfigError(
                "private_key_path", f"{config.private_key_path}: not a PEM private key: {err}"
            ) from None
        certificates = _load_pem_certificates(config.certificate_path, "certificate_path")
        if config.intermediates_path:
            certificates += _load_pem_certificates(config.intermediates_path, "intermediates_path")
        public = (
            certificates[0]
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        if (
            private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            != public
        ):
            raise PluginConfigError("private_key_path", "the private key does not belong to the certificate")
        return private_key, certificates

    def _current(self) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
        """The files as they are now; a file broken since start is an error of this attestation."""
        try:
            return self._load()
        except PluginConfigError as err:
            raise Internal(f"{err}") from None

    @hookimpl
    def attestation_payload(self) -> bytes:
        _, certificates = self._current()
        return json.dumps(
            {"certificates": [_b64(c.public_bytes(serialization.Encoding.DER)) for c in certificates]}
        ).encode()

    @hookimpl
    def answer_challenge(self, challenge: bytes) -> bytes:
        private_key, _ = self._current()
        kind = _kind(private_key)
        asked = _json_object(challenge, "challenge").get(kind)
        if not isinstance(asked, dict):
            raise InvalidArgument(_expecting(kind, "challenge"))
        nonce = _unb64(asked.get("nonce"), "nonce")
        if len(nonce) != NONCE_BYTES:
            raise InvalidArgument(f"the nonce must be {NONCE_BYTES} bytes")
        # Our own nonce in what we sign: the server cannot choose the whole message.
        agent_nonce = os.urandom(NONCE_BYTES)
        answer = {_RSA: None, _ECDSA: None, kind: _sign(private_key, _combined(nonce, agent_nonce), agent_nonce)}
        return json.dumps(answer).encode()
