"""A cert-manager CA issuer for the tests, acting on the fake API server's CertificateRequests.

Built from cert-manager's documentation of the CA issuer: a request for this issuer (name,
kind and group of ``spec.issuerRef``; an ``Issuer`` only in its own namespace) is approved,
then signed a moment later by the issuer's key: the certificate has the CSR's subject, public
key and SANs, ``isCA`` and ``usages`` as requested, and lasts ``spec.duration``.
``status.certificate`` is the certificate followed by the issuer's own (an intermediate under
a root), ``status.ca`` the root. A CSR whose signature does not verify fails the request
(``Ready=False``, reason ``Failed``), as cert-manager's does. ``mode`` makes it deny, fail,
never answer, leave out the CA, sign another key or a non-CA, for the plugin's checks.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.config.duration import parse_duration

from tests.support.kube_api import KubeApiServer
from tests.support.pki import Issued, make_ca

Mode = Literal["sign", "deny", "fail", "ignore", "no-ca", "other-key", "unchained", "not-ca"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": _now()}


_USAGES = {"cert sign": "key_cert_sign", "crl sign": "crl_sign", "digital signature": "digital_signature"}


@dataclass
class FakeIssuer:
    """The ``Issuer`` ``name`` in ``namespace``, signing with an intermediate under ``root``."""

    name: str = "spire-ca"
    namespace: str = "sandbox"
    kind: str = "Issuer"
    group: str = "cert-manager.io"
    mode: Mode = "sign"
    delay: float = 0.3
    root: Issued = field(default_factory=lambda: make_ca(name="cert-manager root", lifetime=timedelta(days=30)))
    intermediate: Issued = field(init=False)
    signed: list[x509.Certificate] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.intermediate = make_ca(issuer=self.root, name="cert-manager issuer", lifetime=timedelta(days=20))

    def attach(self, kube: KubeApiServer) -> FakeIssuer:
        kube.on_create.append(self._created)
        return self

    def _created(self, kube: KubeApiServer, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "CertificateRequest":
            return
        metadata = obj["metadata"]
        timer = threading.Timer(self.delay, self._reconcile, (kube, metadata["namespace"], metadata["name"]))
        timer.daemon = True
        timer.start()

    def _mine(self, request: dict[str, Any]) -> bool:
        ref = request["spec"].get("issuerRef") or {}
        if (ref.get("name"), ref.get("kind") or "Issuer", ref.get("group") or "cert-manager.io") != (
            self.name,
            self.kind,
            self.group,
        ):
            return False
        return self.kind != "Issuer" or request["metadata"]["namespace"] == self.namespace

    def _reconcile(self, kube: KubeApiServer, namespace: str, name: str) -> None:
        request = kube.get("certificaterequests", name, namespace)
        if request is None or not self._mine(request) or self.mode == "ignore":
            return
        status: dict[str, Any] = {}
        if self.mode == "deny":
            status["conditions"] = [_condition("Denied", "True", "policy", "not for you")]
        else:
            status["conditions"] = [_condition("Approved", "True", "cert-manager.io", "auto-approved")]
            status.update(self._sign(request))
        kube.update("certificaterequests", name, namespace, lambda obj: obj.update(status=status))

    def _sign(self, request: dict[str, Any]) -> dict[str, Any]:
        spec = request["spec"]
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
        except ValueError as err:
            return self._failed(f"failed to decode CSR: {err}")
        if not csr.is_signature_valid or self.mode == "fail":
            return self._failed("error signing certificate: CSR signature is invalid")
        public_key = csr.public_key()
        if self.mode == "other-key":
            public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        signer = self.intermediate
        if self.mode == "unchained":
            signer = make_ca(name="cert-manager issuer")  # same name, another key: the chain does not verify
        start = datetime.now(UTC) - timedelta(seconds=30)
        usages = {_USAGES[usage]: True for usage in spec.get("usages") or () if usage in _USAGES}
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.intermediate.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + parse_duration(spec.get("duration") or "2160h"))
            .add_extension(
                x509.BasicConstraints(ca=bool(spec.get("isCA")) and self.mode != "not-ca", path_length=None),
                critical=True,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=usages.get("digital_signature", False),
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=usages.get("key_cert_sign", False),
                    crl_sign=usages.get("crl_sign", False),
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            builder = builder.add_extension(sans, critical=False)
        except x509.ExtensionNotFound:
            pass
        certificate = builder.sign(signer.key, hashes.SHA256())
        self.signed.append(certificate)
        chain = [certificate, self.intermediate.certificate]
        status: dict[str, Any] = {
            "certificate": base64.b64encode(
                b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
            ).decode(),
            "conditions": [
                _condition("Approved", "True", "cert-manager.io", "auto-approved"),
                _condition("Ready", "True", "Issued", "Certificate fetched from issuer successfully"),
            ],
        }
        if self.mode != "no-ca":
            status["ca"] = base64.b64encode(self.root.certificate.public_bytes(serialization.Encoding.PEM)).decode()
        return status

    @staticmethod
    def _failed(message: str) -> dict[str, Any]:
        return {
            "conditions": [
                _condition("Approved", "True", "cert-manager.io", "auto-approved"),
                _condition("Ready", "False", "Failed", message),
            ],
            "failureTime": _now(),
        }
