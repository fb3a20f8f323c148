"""A software TPM for the tests, provisioned as a manufacturer and an operator would.

:class:`SoftwareTpm` runs a real ``swtpm`` (Debian swtpm) on a Unix socket with its own state
directory. :func:`provision_ek` plays the TPM vendor: it regenerates the EK and stores an EK
certificate signed by the test endorsement CA at the TCG NV index. :func:`provision_devid`
plays the operator: it creates a DevID key in the TPM and issues it a certificate from the
test DevID CA, writing the files the agent is configured with. Both go through tpm2-pytss.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyspire.plugin.testing import service_unavailable

from tests.support.waiting import until_listening

SWTPM_PACKAGES = "Debian packages swtpm, swtpm-tools and libtss2-dev (.ci/install installs them and tpm2-pytss)"


@dataclass
class Authority:
    """A test CA: its key and self-signed certificate (or one signed by a parent)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, public_key: object, common_name: str, *, ca: bool = False, days: int = 30) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(self.key, hashes.SHA256())


def new_authority(common_name: str, parent: Authority | None = None) -> Authority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if parent is not None:
        return Authority(key, parent.issue(key.public_key(), common_name, ca=True))
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def tpm2_tools(tpm: SoftwareTpm, tool: str, *args: str, cwd: Path) -> None:
    """Run a tpm2-tools command (Debian tpm2-tools) on ``tpm``, through socat to its socket."""
    binary, socat = shutil.which(tool), shutil.which("socat")
    if binary is None or socat is None:
        service_unavailable(f"{tool} or socat is not installed (Debian tpm2-tools and socat; .ci/tpm installs them)")
    tcti = f"cmd:{socat} - UNIX-CONNECT:{tpm.socket}"
    subprocess.run([str(binary), "-T", tcti, *args], check=True, capture_output=True, timeout=60, cwd=cwd)


class SoftwareTpm:
    """A running ``swtpm socket --tpm2`` whose TPM answers raw commands on ``socket``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("swtpm")
        if binary is None:
            service_unavailable(f"swtpm is not installed ({SWTPM_PACKAGES})")
        try:
            import tpm2_pytss  # noqa: F401, PLC0415 -- the agent half's library, checked before use
        except ImportError as err:
            service_unavailable(f"tpm2-pytss cannot be imported ({err}; {SWTPM_PACKAGES})")
        self.directory = directory
        state = directory / "state"
        state.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "tpm.sock"
        self._process = subprocess.Popen(
            [
                str(binary),
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={state}",
                "--server",
                f"type=unixio,path={self.socket}",
                "--ctrl",
                f"type=unixio,path={directory / 'ctrl.sock'}",
                "--flags",
                "not-need-init,startup-clear",
                "--log",
                f"file={directory / 'swtpm.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            until_listening(self.socket, lambda: self._process.poll() is None)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"swtpm did not start: {err} {self._stderr()}") from None

    def _stderr(self) -> str:
        if self._process.poll() is None or self._process.stderr is None:
            return ""
        return self._process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()


def provision_ek(tpm: SoftwareTpm, authority: Authority) -> x509.Certificate:
    """Store an EK certificate from ``authority`` in the TPM, at the TCG's RSA EK certificate index."""
    from pyspire_tpm_devid.structures import parse_public  # noqa: PLC0415
    from pyspire_tpm_devid.tpm import EK_CERTIFICATE_INDEX, close_tpm, ek_template, open_tpm  # noqa: PLC0415
    from tpm2_pytss import (  # noqa: PLC0415 -- only when a TPM is there
        ESYS_TR,
        TPM2_ALG,
        TPM2B_NV_PUBLIC,
        TPM2B_PUBLIC,
        TPMA_NV,
        TPMS_NV_PUBLIC,
    )

    esapi = open_tpm(str(tpm.socket))
    try:
        handle, public = esapi.create_primary(None, TPM2B_PUBLIC(ek_template()), ESYS_TR.ENDORSEMENT)[:2]
        esapi.flush_context(handle)
        key = parse_public(bytes(public.publicArea.marshal())).key
        der = authority.issue(key, "").public_bytes(serialization.Encoding.DER)
        attributes = (
            TPMA_NV.PPWRITE
            | TPMA_NV.WRITEDEFINE
            | TPMA_NV.PPREAD
            | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD
            | TPMA_NV.NO_DA
            | TPMA_NV.PLATFORMCREATE
        )
        index = esapi.nv_define_space(
            b"",
            TPM2B_NV_PUBLIC(
                TPMS_NV_PUBLIC(
                    nvIndex=EK_CERTIFICATE_INDEX, nameAlg=TPM2_ALG.SHA256, attributes=attributes, dataSize=len(der)
                )
            ),
            ESYS_TR.PLATFORM,
        )
        for offset in range(0, len(der), 512):
            esapi.nv_write(index, der[offset : offset + 512], offset, ESYS_TR.PLATFORM)
    finally:
        close_tpm(esapi)
    return x509.load_der_x509_certificate(der)


@dataclass(frozen=True)
class DevId:
    """The files the agent's ``plugin_data`` points at, and the certificate they hold."""

    certificate_path: Path
    private_path: Path
    public_path: Path
    certificate: x509.Certificate


def provision_devid(
    tpm: SoftwareTpm,
    authority: Authority,
    directory: Path,
    *,
    common_name: str = "node1.example.org",
    chain: tuple[x509.Certificate, ...] = (),
    key_type: str = "rsa",
    password: bytes = b"",
) -> DevId:
    """A DevID key created in ``tpm`` and a certificate for it from ``authority`` (``chain`` appended)."""
    from pyspire_tpm_devid.structures import parse_public  # noqa: PLC0415
    from pyspire_tpm_devid.tpm import close_tpm, open_tpm, srk_template  # noqa: PLC0415
    from tpm2_pytss import (  # noqa: PLC0415 -- only when a TPM is there
        ESYS_TR,
        TPM2_ALG,
        TPM2_ECC,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPMA_OBJECT,
        TPMS_SENSITIVE_CREATE,
        TPMT_PUBLIC,
    )

    attributes = (
        TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    if key_type == "rsa":
        template = TPMT_PUBLIC(type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes)
        detail = template.parameters.rsaDetail
        detail.symmetric.algorithm = TPM2_ALG.NULL
        detail.scheme.scheme = TPM2_ALG.RSASSA
        detail.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
        detail.keyBits = 2048
    else:
        template = TPMT_PUBLIC(type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes)
        detail = template.parameters.eccDetail
        detail.symmetric.algorithm = TPM2_ALG.NULL
        detail.scheme.scheme = TPM2_ALG.ECDSA
        detail.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
        detail.curveID = TPM2_ECC.NIST_P256
        detail.kdf.scheme = TPM2_ALG.NULL
    esapi = open_tpm(str(tpm.socket))
    try:
        srk = esapi.create_primary(None, TPM2B_PUBLIC(srk_template(template.type)), ESYS_TR.OWNER)[0]
        private, public = esapi.create(
            srk, TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=password)), TPM2B_PUBLIC(template)
        )[:2]
        esapi.flush_context(srk)
    finally:
        close_tpm(esapi)
    public_area = bytes(public.publicArea.marshal())
    key = parse_public(public_area).key
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    certificate = authority.issue(key, common_name)
    directory.mkdir(parents=True, exist_ok=True)
    paths = DevId(directory / "devid.crt.pem", directory / "devid.priv.blob", directory / "devid.pub.blob", certificate)
    pems = [certificate.public_bytes(serialization.Encoding.PEM)] + [
        item.public_bytes(serialization.Encoding.PEM) for item in chain
    ]
    paths.certificate_path.write_bytes(b"".join(pems))
    paths.private_path.write_bytes(bytes(private.buffer))
    paths.public_path.write_bytes(public_area)
    return paths
