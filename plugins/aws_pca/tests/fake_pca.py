"""A small AWS Private CA (ACM PCA) on loopback, built from AWS's API reference, for the tests.

moto's acm-pca issues every certificate as a plain leaf (no basic constraints, no key usage),
for a year, ignoring the template and the validity asked for, and gives no chain while its CA
waits for a certificate: a CA certificate from it cannot sign SVIDs. This fake answers the
four calls the plugin makes over AWS's JSON protocol (``X-Amz-Target: ACMPrivateCA.<call>``)
and signs as the service does:

- ``IssueCertificate`` takes the CSR's public key, subject and SAN (AWS's base templates pass
  those through), applies the template (``SubordinateCACertificate_PathLen<N>/V1``: CA with
  path length N, keyCertSign and cRLSign; ``EndEntityCertificate/V1``: a leaf) and the validity
  (``ABSOLUTE`` Unix seconds, ``DAYS``), and refuses a signing algorithm of another key type;
- ``GetCertificate`` answers ``RequestInProgressException`` the first ``pending_polls`` times,
  as issuance takes a moment (boto3's ``certificate_issued`` waiter polls), then the
  certificate and its chain (the issuing CA up to the root);
- a request without a SigV4 ``Authorization`` header is refused, as AWS refuses it.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.http_fakes import serve, stop
from tests.support.pki import Issued

ACCOUNT = "123456789012"
REGION = "us-west-2"

_SIGNING: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "SHA256WITHECDSA": ("EC", hashes.SHA256()),
    "SHA384WITHECDSA": ("EC", hashes.SHA384()),
    "SHA512WITHECDSA": ("EC", hashes.SHA512()),
}


class PcaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FakeCa:
    """One certificate authority of the fake: its key and certificate, and the chain above it."""

    issued: Issued
    chain_above: list[x509.Certificate]
    status: str = "ACTIVE"
    arn: str = field(default_factory=lambda: f"arn:aws:acm-pca:{REGION}:{ACCOUNT}:certificate-authority/{uuid.uuid4()}")


@dataclass
class Requested:
    """What the plugin asked for in one IssueCertificate call, as the service received it."""

    template_arn: str
    signing_algorithm: str
    validity: dict[str, Any]
    csr: x509.CertificateSigningRequest


class FakePca:
    """The fake service: ``endpoint`` for the plugin's ``endpoint`` key; what it was asked, in ``requests``."""

    def __init__(self, pending_polls: int = 0) -> None:
        self.cas: dict[str, FakeCa] = {}
        self.requests: list[Requested] = []
        self.pending_polls = pending_polls
        self._issued: dict[str, tuple[FakeCa, x509.Certificate, int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def add_ca(self, issued: Issued, chain_above: list[x509.Certificate], status: str = "ACTIVE") -> FakeCa:
        ca = FakeCa(issued, chain_above, status)
        self.cas[ca.arn] = ca
        return ca

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePca:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                try:
                    if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
                        raise PcaError("MissingAuthenticationTokenException", "Missing Authentication Token")
                    answer = fake.answer(target.removeprefix("ACMPrivateCA."), body)
                    self._send(200, answer)
                except PcaError as err:
                    self._send(400, {"__type": err.code, "message": str(err)})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = serve(Handler)
        return self

    def stop(self) -> None:
        stop(self._server)

    def answer(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        ca = self.cas.get(body.get("CertificateAuthorityArn", ""))
        if ca is None:
            raise PcaError(
                "ResourceNotFoundException",
                f"Could not find certificate authority {body.get('CertificateAuthorityArn')}",
            )
        if call == "DescribeCertificateAuthority":
            return {"CertificateAuthority": self._described(ca)}
        if call == "IssueCertificate":
            return {"CertificateArn": self._issue(ca, body)}
        if call == "GetCertificate":
            return self._get(ca, body.get("CertificateArn", ""))
        if call == "GetCertificateAuthorityCertificate":
            return {"Certificate": _pem(ca.issued.certificate), "CertificateChain": _pems(ca.chain_above)}
        raise PcaError("InvalidRequestException", f"unsupported call {call}")

    @staticmethod
    def _described(ca: FakeCa) -> dict[str, Any]:
        return {
            "Arn": ca.arn,
            "Type": "SUBORDINATE" if ca.chain_above else "ROOT",
            "Status": ca.status,
            "CertificateAuthorityConfiguration": {
                "KeyAlgorithm": "EC_prime256v1",
                "SigningAlgorithm": "SHA256WITHECDSA",
                "Subject": {"CommonName": ca.issued.certificate.subject.rfc4514_string()},
            },
        }

    def _issue(self, ca: FakeCa, body: dict[str, Any]) -> str:
        if ca.status != "ACTIVE":
            raise PcaError("InvalidStateException", f"The certificate authority {ca.arn} is not in the correct state")
        algorithm = body.get("SigningAlgorithm", "")
        if algorithm not in _SIGNING:
            raise PcaError("InvalidArgsException", f"signing algorithm {algorithm} does not match the CA's EC key")
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode(body["Csr"]))
        except (KeyError, ValueError) as err:
            raise PcaError("MalformedCSRException", f"the CSR cannot be parsed: {err}") from None
        if not csr.is_signature_valid:
            raise PcaError("MalformedCSRException", "the CSR's signature does not verify")
        template = body.get("TemplateArn", "arn:aws:acm-pca:::template/EndEntityCertificate/V1")
        validity = body.get("Validity", {})
        self.requests.append(Requested(template, algorithm, validity, csr))
        certificate = self._sign(ca, csr, template, validity, _SIGNING[algorithm][1])
        arn = f"{ca.arn}/certificate/{uuid.uuid4().hex}"
        with self._lock:
            self._issued[arn] = (ca, certificate, self.pending_polls)
        return arn

    @staticmethod
    def _sign(
        ca: FakeCa,
        csr: x509.CertificateSigningRequest,
        template: str,
        validity: dict[str, Any],
        digest: hashes.HashAlgorithm,
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        if validity.get("Type") == "ABSOLUTE":
            not_after = datetime.fromtimestamp(int(validity["Value"]), UTC)
        elif validity.get("Type") == "DAYS":
            not_after = now + timedelta(days=int(validity["Value"]))
        else:
            raise PcaError("InvalidArgsException", f"validity type {validity.get('Type')} is not supported here")
        name = template.rsplit("/", 2)[-2] if template.count("/") >= 2 else ""
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca.issued.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(min(not_after, ca.issued.certificate.not_valid_after_utc))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issued.key.public_key()), critical=False
            )
        )
        if name.startswith("SubordinateCACertificate_PathLen"):
            path_length = int(name.removeprefix("SubordinateCACertificate_PathLen"))
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        elif name == "EndEntityCertificate":
            builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        else:
            raise PcaError("InvalidArgsException", f"template {template} is not supported here")
        builder = builder.add_extension(usage, critical=True)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            builder = builder.add_extension(san.value, critical=san.critical)
        except x509.ExtensionNotFound:
            pass
        key = ca.issued.key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return builder.sign(key, digest)

    def _get(self, ca: FakeCa, arn: str) -> dict[str, Any]:
        with self._lock:
            found = self._issued.get(arn)
            if found is None or found[0] is not ca:
                raise PcaError("ResourceNotFoundException", f"Could not find certificate {arn}")
            _, certificate, pending = found
            if pending > 0:
                self._issued[arn] = (ca, certificate, pending - 1)
                raise PcaError("RequestInProgressException", "The request is still being processed")
        return {"Certificate": _pem(certificate), "CertificateChain": _pems([ca.issued.certificate, *ca.chain_above])}


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _pems(certificates: list[x509.Certificate]) -> str:
    return "".join(_pem(c) for c in certificates)
