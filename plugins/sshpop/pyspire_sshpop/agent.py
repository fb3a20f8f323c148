"""The agent's ``NodeAttestor "sshpop"``: presents the host certificate and signs with the host key.

The defaults are OpenSSH's RSA host key and its certificate. Both files are checked when the
plugin is configured (readable, a certificate, and the key it certifies), and read again at
every attestation, so a host certificate renewed on disk is the one presented next time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from cryptography.hazmat.primitives.serialization.ssh import serialize_ssh_public_key
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, Internal, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data

from pyspire_sshpop import handshake
from pyspire_sshpop.certificates import HostCertificate, read_host_certificate

__all__ = ["AgentSshPop", "AgentSshPopConfig"]

DEFAULT_HOST_KEY_PATH = "/etc/ssh/ssh_host_rsa_key"
DEFAULT_HOST_CERT_PATH = "/etc/ssh/ssh_host_rsa_key-cert.pub"
_OPENSSH_KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----"


@dataclass(frozen=True)
class AgentSshPopConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "sshpop"``."""

    host_key_path: str = DEFAULT_HOST_KEY_PATH
    host_cert_path: str = DEFAULT_HOST_CERT_PATH


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None


def _private_key(path: str) -> handshake.PrivateKey:
    """The host key, in OpenSSH's format (as ``ssh-keygen`` writes it) or PEM; unencrypted, as host keys are."""
    data = _read(path, "host_key_path")
    try:
        key = (
            load_ssh_private_key(data, None)
            if data.lstrip().startswith(_OPENSSH_KEY)
            else load_pem_private_key(data, None)
        )
    except TypeError:
        raise PluginConfigError("host_key_path", f"{path} is encrypted: host keys have no passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as err:
        raise PluginConfigError("host_key_path", f"{path} is not a readable private key: {err}") from None
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in handshake.EC_CURVES
    ):
        return key
    raise PluginConfigError(
        "host_key_path", f"{path}: only RSA, ECDSA (P-256, P-384, P-521) and Ed25519 host keys are supported"
    )


class AgentSshPop:
    """Presents the node's host certificate and signs the server's nonces with its host key."""

    def __init__(self) -> None:
        self._config: AgentSshPopConfig | None = None
        self._key: handshake.PrivateKey | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self._config = parse_plugin_data(AgentSshPopConfig, plugin_data)
        self._load()  # fail at start, not at the first attestation

    def _load(self) -> tuple[handshake.PrivateKey, HostCertificate]:
        assert self._config is not None
        config = self._config
        key = _private_key(config.host_key_path)
        try:
            certificate = read_host_certificate(_read(config.host_cert_path, "host_cert_path"))
        except ValueError as err:
            raise PluginConfigError(
                "host_cert_path", f"{config.host_cert_path} is not an SSH certificate: {err}"
            ) from None
        if serialize_ssh_public_key(key.public_key()) != serialize_ssh_public_key(certificate.certificate.public_key()):
            raise PluginConfigError(
                "host_key_path", f"{config.host_key_path} is not the key {config.host_cert_path} certifies"
            )
        return key, certificate

    @hookimpl
    def attestation_payload(self) -> bytes:
        try:
            key, certificate = self._load()
        except PluginConfigError as err:
            raise Internal(f"{err}") from None
        # The key answers this attestation's challenge even if the files change meanwhile.
        self._key = key
        return handshake.attestation_data(certificate.wire)

    @hookimpl
    def answer_challenge(self, challenge: bytes) -> bytes:
        server_nonce = handshake.challenge_nonce(challenge)
        if self._key is None:
            raise FailedPrecondition("a challenge came before the attestation data was sent")
        nonce = os.urandom(handshake.NONCE_BYTES)
        return handshake.challenge_response(
            nonce, handshake.sign(self._key, handshake.signed_digest(server_nonce, nonce))
        )
