"""The server's ``NodeAttestor "sshpop"``: trusted host certificates, and proof of their keys.

The agent's certificate must pass :meth:`~pyspire_sshpop.certificates.TrustedAuthorities.check`
(and ``canonical_domain``, when set); the agent then signs a fresh nonce with the host key.
The node may attest again with the same certificate (SPIRE's ``CanReattest``): every attempt
signs a new nonce, so a copy of the certificate alone attests nothing. There are no selectors
(SPIRE has none); the agent path comes from ``agent_path_template``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data

from pyspire_sshpop import handshake
from pyspire_sshpop.certificates import (
    CertificateRefused,
    SigningKey,
    TrustedAuthorities,
    certificate_from_wire,
    fingerprint,
    hostname,
    parse_authorized_key,
)

__all__ = ["ServerSshPop", "ServerSshPopConfig"]

PLUGIN_NAME = "sshpop"
DEFAULT_TEMPLATE = "/{{ .PluginName}}/{{ .Fingerprint }}"


@dataclass(frozen=True)
class ServerSshPopConfig:
    """``plugin_data`` of the server's ``NodeAttestor "sshpop"``."""

    cert_authorities: tuple[str, ...] = field(default=())
    cert_authorities_path: str = ""
    canonical_domain: str = ""
    agent_path_template: str = DEFAULT_TEMPLATE


def _authorities_from_file(path: str) -> list[SigningKey]:
    """One CA key per line; blank lines and ``#`` comments are skipped."""
    key = "cert_authorities_path"
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise PluginConfigError(key, f"{path} is not text") from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys.append(parse_authorized_key(line))
        except ValueError as err:
            raise PluginConfigError(
                key, f"{path} line {number} is not a CA key in authorized_keys format: {err}"
            ) from None
    if not keys:
        raise PluginConfigError(key, f"{path} holds no CA key")
    return keys


class ServerSshPop:
    """Verifies SSH host certificates against the trusted CAs and challenges their keys."""

    def __init__(self) -> None:
        self._authorities: TrustedAuthorities | None = None
        self._canonical_domain = ""
        self._template = AgentPathTemplate(DEFAULT_TEMPLATE)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerSshPopConfig, plugin_data)
        keys: list[SigningKey] = []
        for index, line in enumerate(config.cert_authorities):
            try:
                keys.append(parse_authorized_key(line))
            except ValueError as err:
                raise PluginConfigError(
                    "cert_authorities", f"entry {index + 1} is not a CA key in authorized_keys format: {err}"
                ) from None
        if config.cert_authorities_path:
            keys.extend(_authorities_from_file(config.cert_authorities_path))
        if not keys:
            raise PluginConfigError("cert_authorities", "at least one CA key is required (or cert_authorities_path)")
        self._template = AgentPathTemplate(config.agent_path_template)
        self._authorities = TrustedAuthorities(keys)
        self._canonical_domain = config.canonical_domain

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        if self._authorities is None:
            raise FailedPrecondition("not configured")
        try:
            host = certificate_from_wire(handshake.read_attestation_data(payload))
        except ValueError as err:
            raise InvalidArgument(f"the certificate cannot be parsed: {err}") from None
        try:
            self._authorities.check(host)
            name = hostname(host, self._canonical_domain)
        except CertificateRefused as err:
            raise PermissionDenied(str(err)) from None

        nonce = os.urandom(handshake.NONCE_BYTES)
        agent_nonce, signature = handshake.read_challenge_response(challenge(handshake.challenge(nonce)))
        key = host.certificate.public_key()
        try:
            handshake.verify(key, handshake.signed_digest(nonce, agent_nonce), signature)
        except InvalidSignature as err:
            detail = f" ({err})" if str(err) else ""
            raise PermissionDenied(
                f"challenge response verification failed: the signature is not the host key's{detail}"
            ) from None

        path = self._template.render(
            {
                "PluginName": PLUGIN_NAME,
                "Fingerprint": fingerprint(host),
                "Hostname": name,
                "KeyId": host.certificate.key_id.decode(errors="replace"),
                "Serial": host.certificate.serial,
            }
        )
        return AttestationResult(path, (), can_reattest=True)
