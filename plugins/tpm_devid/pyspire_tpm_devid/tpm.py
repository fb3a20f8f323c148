"""The agent's TPM: what ``tpm_devid`` asks of it, through tpm2-pytss (the TSS's ESAPI).

Only the agent half imports this module (the server needs no TPM library). A
:class:`Session` is SPIRE's: it loads the DevID key under the storage root key (regenerated
from the TCG "high range" SRK template with a random password, as SPIRE does), creates and
loads a fresh attestation key from SPIRE's AK template, regenerates the endorsement key from
the TCG default RSA template, and then certifies, signs and activates credentials.

``tpm_device_path`` names either a TPM character device (``/dev/tpmrm0``, opened through the
TSS's device TCTI) or a Unix socket that speaks raw TPM commands, as go-tpm (hence SPIRE)
accepts: a software TPM such as ``swtpm socket --server type=unixio``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import (  # type: ignore[import-untyped]
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_ECC,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TCTILdr,
    TSS2_Exception,
)
from tpm2_pytss.TCTI import PyTCTI  # type: ignore[import-untyped]

__all__ = [
    "EK_CERTIFICATE_INDEX",
    "Session",
    "TpmError",
    "ak_template",
    "autodetect_device",
    "close_tpm",
    "ek_template",
    "open_tpm",
    "read_private_blob",
    "read_public_blob",
    "srk_template",
]

EK_CERTIFICATE_INDEX: Final = 0x01C00002
"""NV index of the RSA EK certificate (TCG TPM v2.0 Provisioning Guidance, 7.8)."""

_T = TypeVar("_T")
_RANDOM_PASSWORD_BYTES: Final = 32
_NV_CHUNK: Final = 512
_DEVICE_NAMES: Final = (re.compile(r"tpmrm\d+$"), re.compile(r"tpm\d+$"))

# The TCG EK credential profile's policy for the default EK: PolicySecret(TPM_RH_ENDORSEMENT).
_EK_POLICY: Final = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")


class TpmError(Exception):
    """The TPM refused or failed a command; the message says which step."""


def _rsa(attributes: TPMA_OBJECT, *, storage: bool, auth_policy: bytes = b"", unique: bytes = b"") -> TPMT_PUBLIC:
    public = TPMT_PUBLIC(type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes)
    public.authPolicy = auth_policy
    detail = public.parameters.rsaDetail
    if storage:
        detail.symmetric.algorithm = TPM2_ALG.AES
        detail.symmetric.keyBits.aes = 128
        detail.symmetric.mode.aes = TPM2_ALG.CFB
        detail.scheme.scheme = TPM2_ALG.NULL
    else:
        detail.symmetric.algorithm = TPM2_ALG.NULL
        detail.scheme.scheme = TPM2_ALG.RSASSA
        detail.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
    detail.keyBits = 2048
    detail.exponent = 0
    public.unique.rsa = unique
    return public


_STORAGE: Final = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)


def ek_template() -> TPMT_PUBLIC:
    """The TCG default RSA EK template (low range, L-1): the key the EK certificate certifies."""
    attributes = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.ADMINWITHPOLICY
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
    )
    return _rsa(attributes, storage=True, auth_policy=_EK_POLICY, unique=bytes(256))


def srk_template(key_type: int) -> TPMT_PUBLIC:
    """The TCG high-range SRK template (H-1 RSA, H-2 ECC) DevID keys are created under, as SPIRE's."""
    if key_type == TPM2_ALG.RSA:
        return _rsa(_STORAGE, storage=True)
    public = TPMT_PUBLIC(type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=_STORAGE)
    detail = public.parameters.eccDetail
    detail.symmetric.algorithm = TPM2_ALG.AES
    detail.symmetric.keyBits.aes = 128
    detail.symmetric.mode.aes = TPM2_ALG.CFB
    detail.scheme.scheme = TPM2_ALG.NULL
    detail.curveID = TPM2_ECC.NIST_P256
    detail.kdf.scheme = TPM2_ALG.NULL
    return public


def ak_template() -> TPMT_PUBLIC:
    """SPIRE's attestation key: a restricted RSASSA-SHA256 signing key fixed to the TPM."""
    attributes = (
        TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA
    )
    return _rsa(attributes, storage=False)


def _without_size(data: bytes) -> bytes:
    """SPIRE's blobs are a structure's bytes; tpm2-tools writes them behind a 16-bit size: both are read."""
    if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2:
        return data[2:]
    return data


def read_public_blob(data: bytes) -> TPMT_PUBLIC:
    """A key's public area from ``devid_pub_path``: SPIRE's ``TPMT_PUBLIC`` or tpm2-tools' ``TPM2B_PUBLIC``."""
    raw = _without_size(data)
    try:
        public, used = TPMT_PUBLIC.unmarshal(raw)
    except (TSS2_Exception, ValueError) as err:
        raise ValueError(f"not a TPM public area: {err}") from None
    if used != len(raw):
        raise ValueError(f"not a TPM public area ({len(raw) - used} trailing bytes)")
    if public.type not in (TPM2_ALG.RSA, TPM2_ALG.ECC):
        raise ValueError(f"bad key type: 0x{int(public.type):04x}")
    if not public.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT:
        raise ValueError("not a signing key")
    return public


def read_private_blob(data: bytes) -> TPM2B_PRIVATE:
    """A key's private blob from ``devid_priv_path`` (with or without its 16-bit size)."""
    raw = _without_size(data)
    if not raw:
        raise ValueError("the private blob is empty")
    return TPM2B_PRIVATE(raw)


class _UnixSocketTcti(PyTCTI):  # type: ignore[misc]
    """Raw TPM commands over a Unix stream socket, one response per command (go-tpm's emulator transport)."""

    def __init__(self, path: str) -> None:
        super().__init__(max_size=4096)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(30)
        self._socket.connect(path)

    def do_transmit(self, command: bytes) -> None:
        self._socket.sendall(command)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                raise TpmError("the TPM socket closed mid-response")
            data += chunk
        return data

    def do_receive(self, timeout: int) -> bytes:
        header = self._exactly(10)
        size = struct.unpack(">I", header[2:6])[0]
        return header + self._exactly(size - 10)

    def do_finalize(self) -> None:
        self._socket.close()


def autodetect_device(directory: str = "/dev") -> str:
    """The only TPM device under ``directory`` (resource manager ``tpmrm*`` preferred), as SPIRE finds it."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise TpmError(f"tpm autodetection failed: {err.strerror}") from None
    for pattern in _DEVICE_NAMES:
        found = [name for name in names if pattern.search(name)]
        if len(found) > 1:
            raise TpmError("tpm autodetection failed: more than one possible TPM device was found")
        if found:
            return str(Path(directory) / found[0])
    raise TpmError("tpm autodetection failed: not found")


def open_tpm(path: str) -> ESAPI:
    """An ESAPI context on the TPM at ``path`` (a character device or a raw-command Unix socket)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISSOCK(mode):
            return ESAPI(_UnixSocketTcti(path))
        if stat.S_ISCHR(mode):
            return ESAPI(TCTILdr("device", path))
    except (OSError, TSS2_Exception) as err:
        raise TpmError(f"cannot open TPM at {path!r}: {err}") from None
    raise TpmError(f"cannot open TPM at {path!r}: not a character device or a Unix socket")


def close_tpm(esapi: ESAPI) -> None:
    """Finalize ``esapi`` and the transport under it (ESAPI leaves a TCTI it was given open)."""
    tcti = esapi.get_tcti()
    esapi.close()
    if tcti is not None:
        tcti.finalize()


def _sensitive(password: bytes) -> TPM2B_SENSITIVE_CREATE:
    return TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=password))


class Session:
    """A TPM with the DevID key, a fresh attestation key and the endorsement key loaded."""

    def __init__(
        self,
        esapi: ESAPI,
        devid: tuple[TPMT_PUBLIC, TPM2B_PRIVATE],
        passwords: tuple[bytes, bytes, bytes],
    ) -> None:
        """``passwords`` are the endorsement hierarchy's, the owner hierarchy's and the DevID key's.

        The session owns ``esapi`` from here: when a step fails, what was loaded is flushed and
        the TPM closed before the error is raised (a TPM without a resource manager, such as a
        software TPM on a socket, keeps objects loaded after the connection ends).
        """
        self._esapi = esapi
        endorsement_password, owner_password, devid_password = passwords
        self._handles: list[ESYS_TR] = []
        devid_public, devid_private = devid
        self._devid_public = devid_public
        try:
            esapi.tr_set_auth(ESYS_TR.OWNER, owner_password)
            esapi.tr_set_auth(ESYS_TR.ENDORSEMENT, endorsement_password)
            self.devid = self._step(
                "cannot load DevID key on TPM", self._load, devid_public, devid_private, devid_password
            )
            ak_password = os.urandom(_RANDOM_PASSWORD_BYTES)
            ak_private, ak_public = self._step("cannot create attestation key", self._create_ak, ak_password)
            self.ak_public: bytes = bytes(ak_public.marshal())
            self.ak = self._step("cannot load attestation key", self._load, ak_public, ak_private, ak_password)
            self.ek = self._step("cannot create endorsement key", self._create_ek)
        except BaseException:
            self.close()
            raise

    def _step(self, what: str, action: Callable[..., _T], *args: Any) -> _T:
        try:
            return action(*args)
        except TSS2_Exception as err:
            raise TpmError(f"{what}: {err}") from None

    def _primary(self, hierarchy: ESYS_TR, template: TPMT_PUBLIC, password: bytes) -> ESYS_TR:
        handle = self._esapi.create_primary(_sensitive(password), TPM2B_PUBLIC(template), hierarchy)[0]
        return handle

    def _load(self, public: TPMT_PUBLIC, private: TPM2B_PRIVATE, password: bytes) -> ESYS_TR:
        srk_password = os.urandom(_RANDOM_PASSWORD_BYTES)
        srk = self._primary(ESYS_TR.OWNER, srk_template(public.type), srk_password)
        try:
            self._esapi.tr_set_auth(srk, srk_password)
            handle = self._esapi.load(srk, private, TPM2B_PUBLIC(public))
        finally:
            self._esapi.flush_context(srk)
        self._handles.append(handle)
        self._esapi.tr_set_auth(handle, password)
        return handle

    def _create_ak(self, password: bytes) -> tuple[TPM2B_PRIVATE, TPMT_PUBLIC]:
        srk_password = os.urandom(_RANDOM_PASSWORD_BYTES)
        srk = self._primary(ESYS_TR.OWNER, srk_template(TPM2_ALG.RSA), srk_password)
        try:
            self._esapi.tr_set_auth(srk, srk_password)
            private, public = self._esapi.create(srk, _sensitive(password), TPM2B_PUBLIC(ak_template()))[:2]
        finally:
            self._esapi.flush_context(srk)
        return private, public.publicArea

    def _create_ek(self) -> ESYS_TR:
        handle = self._primary(ESYS_TR.ENDORSEMENT, ek_template(), b"")
        self._handles.append(handle)
        return handle

    def ek_public(self) -> bytes:
        """The regenerated EK's public area, as the TPM reports it."""
        public = self._step("cannot read EK from handle", self._esapi.read_public, self.ek)[0]
        return bytes(public.publicArea.marshal())

    def ek_certificate(self) -> bytes:
        """The EK certificate from its NV index, without the padding some TPMs store after it."""

        def read() -> bytes:
            index = self._esapi.tr_from_tpmpublic(EK_CERTIFICATE_INDEX)
            size = self._esapi.nv_read_public(index)[0].nvPublic.dataSize
            data = b""
            while len(data) < size:
                data += bytes(self._esapi.nv_read(index, min(_NV_CHUNK, size - len(data)), len(data)))
            return data

        data = self._step(f"failed to read NV index {EK_CERTIFICATE_INDEX:08x}", read)
        if len(data) < 4 or data[0] != 0x30:
            raise TpmError(f"failed to unmarshall certificate read from {EK_CERTIFICATE_INDEX:08x}")
        if data[1] < 0x80:
            end = 2 + data[1]
        else:
            count = data[1] & 0x7F
            end = 2 + count + int.from_bytes(data[2 : 2 + count], "big")
        if end > len(data):
            raise TpmError(f"failed to unmarshall certificate read from {EK_CERTIFICATE_INDEX:08x}")
        return data[:end]

    def certify_devid(self) -> tuple[bytes, bytes]:
        """The AK's certification of the DevID key: ``(TPMS_ATTEST, TPMT_SIGNATURE)``."""
        info, signature = self._step(
            "tpm2.Certify failed", self._esapi.certify, self.devid, self.ak, b"", TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        )
        return bytes(info), bytes(signature.marshal())

    def sign_nonce(self, nonce: bytes) -> bytes:
        """The DevID key's signature of ``nonce``: PKCS#1 v1.5 bytes (RSA) or DER (ECDSA)."""
        if self._devid_public.type == TPM2_ALG.RSA:
            hash_alg = self._devid_public.parameters.rsaDetail.scheme.details.anySig.hashAlg
        else:
            hash_alg = self._devid_public.parameters.eccDetail.scheme.details.anySig.hashAlg
        digest, ticket = self._step("tpm2.Hash failed", self._esapi.hash, nonce, hash_alg, ESYS_TR.OWNER)
        signature = self._step(
            "tpm2.Sign failed", self._esapi.sign, self.devid, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), ticket
        )
        if signature.sigAlg in (TPM2_ALG.RSASSA, TPM2_ALG.RSAPSS):
            return bytes(signature.signature.rsassa.sig)
        ecdsa = signature.signature.ecdsa
        return encode_dss_signature(
            int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
        )

    def activate_credential(self, credential: bytes, secret: bytes) -> bytes:
        """Unwrap the server's credential with the EK, for the AK (proves they share this TPM)."""

        def activate() -> bytes:
            policy = self._esapi.start_auth_session(
                ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
            )
            try:
                self._esapi.policy_secret(ESYS_TR.ENDORSEMENT, policy, b"", b"", b"", 0)
                released = self._esapi.activate_credential(
                    self.ak,
                    self.ek,
                    TPM2B_ID_OBJECT(credential),
                    TPM2B_ENCRYPTED_SECRET(secret),
                    session1=ESYS_TR.PASSWORD,
                    session2=policy,
                )
            finally:
                self._esapi.flush_context(policy)
            return bytes(released)

        return self._step("failed to activate credential", activate)

    def close(self) -> None:
        """Flush what was loaded and close the TPM connection."""
        for handle in self._handles:
            with contextlib.suppress(TSS2_Exception):  # closing anyway: the TPM drops it with the connection
                self._esapi.flush_context(handle)
        self._handles.clear()
        close_tpm(self._esapi)
