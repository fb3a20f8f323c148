"""The agent's ``NodeAttestor "tpm_devid"``: the DevID certificate, and the TPM that holds its key.

The certificate and key blobs are read and checked when the plugin is configured, so a
wrong path or file stops the agent at start. Each attestation opens the TPM, loads the
DevID key, creates a fresh attestation key and regenerates the endorsement key
(:class:`pyspire_tpm_devid.tpm.Session`); the session answers the server's challenge and is
closed after it (or at the next attestation, should the server never send one).

tpm2-pytss is imported when the plugin is configured, not when the module is: a server that
loads only the server half needs no TPM library, and an agent without it is told which
package is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import FailedPrecondition, Internal, InvalidArgument, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.spiffe.pem import pem_certificates

from pyspire_tpm_devid import wire

__all__ = ["AgentTpmDevId", "AgentTpmDevIdConfig"]

DEVICE_DIRECTORY = "/dev"


@dataclass(frozen=True)
class AgentTpmDevIdConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "tpm_devid"`` (SPIRE's keys and defaults)."""

    tpm_device_path: str = ""
    devid_cert_path: str = ""
    devid_priv_path: str = ""
    devid_pub_path: str = ""
    endorsement_hierarchy_password: str = ""
    owner_hierarchy_password: str = ""
    devid_password: str = ""


def _tpm_module() -> ModuleType:
    try:
        return importlib.import_module("pyspire_tpm_devid.tpm")
    except ImportError as err:
        raise PluginConfigError(
            None,
            f"the agent half needs tpm2-pytss ({err}): pip install 'pyspire-tpm-devid[agent]' "
            "(it builds against the TSS, Debian package libtss2-dev)",
        ) from None


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"unable to load DevID files: cannot read {path}: {err.strerror}") from None


@dataclass(frozen=True)
class _Loaded:
    device: str
    chain: tuple[bytes, ...]
    public: Any
    private: Any
    passwords: tuple[bytes, bytes, bytes]


class AgentTpmDevId:
    """Presents the DevID certificate and answers the server's challenges with the TPM."""

    def __init__(self) -> None:
        self._tpm: ModuleType | None = None
        self._loaded: _Loaded | None = None
        self._session: Any = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentTpmDevIdConfig, plugin_data)
        for key in ("devid_cert_path", "devid_priv_path", "devid_pub_path"):
            if not getattr(config, key):
                raise PluginConfigError(key, f"invalid configuration: {key} is required")
        tpm = _tpm_module()
        device = config.tpm_device_path
        if not device:
            try:
                device = tpm.autodetect_device(DEVICE_DIRECTORY)
            except tpm.TpmError as err:
                raise PluginConfigError("tpm_device_path", str(err)) from None
        # Read first: PluginConfigError is a ValueError, which the parsers' handlers would re-word.
        certificates = _read(config.devid_cert_path, "devid_cert_path")
        public_blob = _read(config.devid_pub_path, "devid_pub_path")
        private_blob = _read(config.devid_priv_path, "devid_priv_path")
        try:
            chain = tuple(certificate.public_bytes(Encoding.DER) for certificate in pem_certificates(certificates))
        except ValueError as err:
            raise PluginConfigError(
                "devid_cert_path", f"unable to load DevID files: cannot load certificate(s): {err}"
            ) from None
        try:
            public = tpm.read_public_blob(public_blob)
        except ValueError as err:
            raise PluginConfigError("devid_pub_path", f"unable to load DevID files: {err}") from None
        try:
            private = tpm.read_private_blob(private_blob)
        except ValueError as err:
            raise PluginConfigError("devid_priv_path", f"unable to load DevID files: {err}") from None
        passwords = (
            config.endorsement_hierarchy_password.encode(),
            config.owner_hierarchy_password.encode(),
            config.devid_password.encode(),
        )
        self._close_session()
        self._tpm = tpm
        self._loaded = _Loaded(device, chain, public, private, passwords)

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @hookimpl
    def close(self) -> None:
        self._close_session()

    @hookimpl
    def attestation_payload(self) -> bytes:
        if self._tpm is None or self._loaded is None:
            raise FailedPrecondition("not configured")
        tpm, loaded = self._tpm, self._loaded
        self._close_session()
        try:
            esapi = tpm.open_tpm(loaded.device)
        except tpm.TpmError as err:
            raise Internal(f"unable to start a new TPM session: {err}") from None
        try:
            session = tpm.Session(esapi, (loaded.public, loaded.private), loaded.passwords)
        except tpm.TpmError as err:
            raise Internal(f"unable to start a new TPM session: {err}") from None
        self._session = session
        try:
            ek_certificate = session.ek_certificate()
        except tpm.TpmError as err:
            self._close_session()
            raise Internal(f"unable to get endorsement certificate: {err}") from None
        try:
            ek_public = session.ek_public()
            certify_info, certify_signature = session.certify_devid()
        except tpm.TpmError as err:
            self._close_session()
            raise Internal(f"unable to certify DevID key: {err}") from None
        return wire.AttestationData(
            devid_chain=loaded.chain,
            devid_public=bytes(loaded.public.marshal()),
            ek_certificate=ek_certificate,
            ek_public=ek_public,
            ak_public=session.ak_public,
            certify_info=certify_info,
            certify_signature=certify_signature,
        ).encode()

    @hookimpl
    def answer_challenge(self, challenge: bytes) -> bytes:
        if self._tpm is None or self._session is None:
            raise FailedPrecondition("a challenge came before the attestation data was sent")
        tpm, session = self._tpm, self._session
        try:
            try:
                received = wire.read_challenge(challenge)
            except wire.WireError as err:
                raise InvalidArgument(f"unable to unmarshall challenges: {err}") from None
            if received is None:
                raise Internal("received empty credential activation challenge from server")
            try:
                signature = session.sign_nonce(received.nonce)
            except tpm.TpmError as err:
                raise Internal(f"unable to solve proof of possession challenge: {err}") from None
            try:
                released = session.activate_credential(received.credential, received.secret)
            except tpm.TpmError as err:
                raise Internal(f"unable to solve proof of residency challenge: {err}") from None
        finally:
            self._close_session()
        return wire.ChallengeAnswer(signature, released).encode()
