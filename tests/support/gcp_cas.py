"""A small Certificate Authority Service (REST v1) for tests, written from the API reference, that really issues.

It serves what ``google-cloud-private-ca``'s REST transport asks when an UpstreamAuthority
mints: CA pools of a location (list), their certificate authorities (list, with a
``labels.KEY:VALUE`` or ``labels.KEY=VALUE`` filter, paged) and ``certificates.create`` from a
structured config: the certificate is made with ``cryptography`` and signed by the issuing
CA's real key, with the subject, URI and DNS SANs, CA options, key usage and public key the
config asks for, valid for the lifetime asked (cut at the CA's own end, as CA Service cuts
it). The answer carries the chain from the issuing CA up to its root, last. Certificate IDs
must fit CA Service's pattern and are unique in a pool.

CAs are self-signed roots or subordinates of another CA of the fake, with labels, a state, a
create time and a lifetime. An OAuth token endpoint lets a service account file whose
``token_uri`` points here authenticate; requests without a token it issued (or a JWT signed by
one of its service accounts' keys) are refused, as Google refuses them.

Faults for the tests: ``fail`` maps an operation (``listCaPools``,
``listCertificateAuthorities``, ``createCertificate``) to an HTTP status it answers with;
``before_create`` runs as a create arrives; ``drop_chain`` answers a create without
``pemCertificateChain``; ``substitute_key`` issues the certificate for a key of the fake's
instead of the one asked for.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.google_api import ApiError, GoogleRestFake
from tests.support.pki import Issued, make_ca

__all__ = ["LOCATION", "FakeAuthority", "FakeCas"]

LOCATION = "projects/test-project/locations/us-east1"

_POOL = r"projects/[^/]+/locations/[^/]+/caPools/[^/]+"
_CERTIFICATE_ID = re.compile(r"[a-zA-Z0-9_-]{1,63}")
# PublicKey.KeyFormat and the enum-encoding=int form the REST transport sends.
_PEM_FORMAT = ("PEM", 1)
_SUBJECT_OIDS = (("countryCode", NameOID.COUNTRY_NAME), ("province", NameOID.STATE_OR_PROVINCE_NAME),
                 ("locality", NameOID.LOCALITY_NAME), ("streetAddress", NameOID.STREET_ADDRESS),
                 ("postalCode", NameOID.POSTAL_CODE), ("organization", NameOID.ORGANIZATION_NAME),
                 ("organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
                 ("commonName", NameOID.COMMON_NAME))  # fmt: skip
_KEY_USAGES = {"digitalSignature": "digital_signature", "contentCommitment": "content_commitment",
               "keyEncipherment": "key_encipherment", "dataEncipherment": "data_encipherment",
               "keyAgreement": "key_agreement", "certSign": "key_cert_sign", "crlSign": "crl_sign",
               "encipherOnly": "encipher_only", "decipherOnly": "decipher_only"}  # fmt: skip


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeAuthority:
    """A CA of the fake: its certificate and key, the chain up to its root, and what CA Service says of it."""

    name: str
    issued: Issued
    chain: list[x509.Certificate]
    """Its own certificate first, its root last (``pemCaCertificates``)."""
    labels: dict[str, str]
    state: str
    create_time: datetime
    lifetime: timedelta

    @property
    def pool(self) -> str:
        return self.name.rsplit("/certificateAuthorities/", 1)[0]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "SELF_SIGNED" if len(self.chain) == 1 else "SUBORDINATE",
            "tier": "ENTERPRISE",
            "state": self.state,
            "labels": dict(self.labels),
            "lifetime": f"{int(self.lifetime.total_seconds())}s",
            "createTime": _timestamp(self.create_time),
            "pemCaCertificates": [_pem(certificate) for certificate in self.chain],
            "keySpec": {"algorithm": "EC_P256_SHA256"},
        }


@dataclass
class _Created:
    """One ``certificates.create`` as it was asked: the query's IDs and the Certificate body."""

    parent: str
    certificate_id: str
    issuing_certificate_authority_id: str
    body: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)


class FakeCas(GoogleRestFake):
    """The fake CA Service on 127.0.0.1; ``url`` is its ``api_endpoint``."""

    def __init__(self) -> None:
        self.pools: list[str] = []
        self.authorities: dict[str, FakeAuthority] = {}
        self.requests: list[_Created] = []
        self.fail: dict[str, int] = {}
        self.drop_chain = False
        self.substitute_key = False
        self.before_create: Callable[[], None] | None = None
        """Run as a create arrives: a test's change between the list and the create, as another admin's."""
        self.max_page_size = 2
        """Lists are cut in pages this long (whatever is asked), so clients must follow page tokens."""
        self._certificates: dict[str, dict[str, Any]] = {}
        super().__init__()

    def add_pool(self, pool_id: str, location: str = LOCATION) -> str:
        name = f"{location}/caPools/{pool_id}"
        self.pools.append(name)
        return name

    def add_ca(
        self,
        pool: str,
        ca_id: str,
        labels: dict[str, str],
        *,
        state: str = "ENABLED",
        issuer: FakeAuthority | None = None,
        lifetime: timedelta = timedelta(days=1),
        created: datetime | None = None,
    ) -> FakeAuthority:
        """A CA in ``pool``: a self-signed root, or a subordinate of ``issuer`` (another CA of the fake)."""
        if pool not in self.pools:
            raise ValueError(f"no pool {pool}")
        created = created or datetime.now(UTC) - timedelta(minutes=1)
        issued = make_ca(name=ca_id, issuer=issuer.issued if issuer else None, not_before=created, lifetime=lifetime)
        authority = FakeAuthority(
            f"{pool}/certificateAuthorities/{ca_id}",
            issued,
            [issued.certificate, *(issuer.chain if issuer else [])],
            dict(labels),
            state,
            created,
            lifetime,
        )
        self.authorities[authority.name] = authority
        return authority

    # The API.

    def dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if method == "GET" and (found := re.fullmatch(r"(projects/[^/]+/locations/[^/]+)/caPools", path)):
            self._maybe_fail("listCaPools")
            pools = [
                {"name": pool, "tier": "ENTERPRISE"} for pool in self.pools if pool.startswith(found.group(1) + "/")
            ]
            return self._page("caPools", pools, query)
        if found := re.fullmatch(f"({_POOL})/certificateAuthorities", path):
            self._maybe_fail("listCertificateAuthorities")
            pool = self._pool(found.group(1))
            key, value = self._filter(query.get("filter", ""))
            listed = [authority.json() for authority in self.authorities.values()
                      if authority.pool == pool and (key is None or authority.labels.get(key) == value)]  # fmt: skip
            return self._page("certificateAuthorities", listed, query)
        if method == "POST" and (found := re.fullmatch(f"({_POOL})/certificates", path)):
            self._maybe_fail("createCertificate")
            return self._create(self._pool(found.group(1)), query, body)
        raise ApiError(404, f"no such resource {path}")

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.fail:
            raise ApiError(self.fail[operation], f"injected failure of {operation}")

    def _pool(self, name: str) -> str:
        if name not in self.pools:
            raise ApiError(404, f"Resource '{name}' was not found")
        return name

    @staticmethod
    def _filter(text: str) -> tuple[str | None, str | None]:
        """``labels.KEY:VALUE`` (has) or ``labels.KEY=VALUE``: the one clause SPIRE's plugin sends."""
        if not text:
            return None, None
        found = re.fullmatch(r'\s*labels\.([a-z][\w-]*)\s*[:=]\s*("?)([\w-]*)\2\s*', text)
        if found is None:
            raise ApiError(400, f"invalid filter {text!r}")
        return found.group(1), found.group(3)

    def _page(self, field_name: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or self.max_page_size), self.max_page_size)
        answer: dict[str, Any] = {field_name: items[start : start + size]}
        if start + size < len(items):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _create(self, pool: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if self.before_create is not None:
            self.before_create()
        certificate_id = query.get("certificateId", "")
        if not _CERTIFICATE_ID.fullmatch(certificate_id):
            raise ApiError(400, f"certificate_id {certificate_id!r} must match [a-zA-Z0-9_-]{{1,63}}")
        name = f"{pool}/certificates/{certificate_id}"
        if name in self._certificates:
            raise ApiError(409, f"Resource '{name}' already exists")
        issuer_id = query.get("issuingCertificateAuthorityId", "")
        issuer = self.authorities.get(f"{pool}/certificateAuthorities/{issuer_id}")
        if issuer is None:
            raise ApiError(404, f"CertificateAuthority '{issuer_id}' was not found in {pool}")
        if issuer.state != "ENABLED":
            raise ApiError(
                400,
                f"CertificateAuthority '{issuer.name}' is in state {issuer.state}, not ENABLED",
                "FAILED_PRECONDITION",
            )
        created = _Created(pool, certificate_id, issuer_id, body)
        self.requests.append(created)
        certificate = self._issue(issuer, body)
        answer = {
            "name": name,
            "config": body.get("config", {}),
            "lifetime": body.get("lifetime"),
            "issuerCertificateAuthority": issuer.name,
            "pemCertificate": _pem(certificate),
            "pemCertificateChain": [] if self.drop_chain else [_pem(c) for c in issuer.chain],
            "createTime": _timestamp(datetime.now(UTC)),
        }
        self._certificates[name] = answer
        created.answer = answer
        return answer

    def _issue(self, issuer: FakeAuthority, body: dict[str, Any]) -> x509.Certificate:
        """The certificate the structured config describes, signed by ``issuer``'s key."""
        if "pemCsr" in body or "config" not in body:
            raise ApiError(400, "this fake issues from a structured config only")
        config = body["config"]
        public = config.get("publicKey", {})
        if public.get("format") not in _PEM_FORMAT:
            raise ApiError(400, f"public key format {public.get('format')!r} is not PEM")
        try:
            key = serialization.load_pem_public_key(base64.b64decode(public["key"]))
        except (KeyError, ValueError) as err:
            raise ApiError(400, f"invalid public key: {err}") from None
        if self.substitute_key:
            key = ec.generate_private_key(ec.SECP256R1()).public_key()
        found = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(body.get("lifetime", "")))
        if found is None or float(found.group(1)) <= 0:
            raise ApiError(400, f"invalid lifetime {body.get('lifetime')!r}")
        now = datetime.now(UTC).replace(microsecond=0)
        ends = min(now + timedelta(seconds=float(found.group(1))), issuer.issued.certificate.not_valid_after_utc)
        subject_config = config.get("subjectConfig", {})
        wanted = subject_config.get("subject", {})
        subject = x509.Name([x509.NameAttribute(oid, wanted[key]) for key, oid in _SUBJECT_OIDS if wanted.get(key)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.issued.certificate.subject)
            .public_key(key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(ends)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)  # type: ignore[arg-type]
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.issued.key.public_key()), critical=False
            )
        )
        names = subject_config.get("subjectAltName", {})
        general: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in names.get("uris", [])]
        general += [x509.DNSName(dns) for dns in names.get("dnsNames", [])]
        general += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.get("ipAddresses", [])]
        if general:
            builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
        x509_config = config.get("x509Config", {})
        options = x509_config.get("caOptions", {})
        if options.get("isCa"):
            length = options.get("maxIssuerPathLength")
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None if length is None else int(length)), critical=True
            )
        elif "isCa" in options:
            builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = x509_config.get("keyUsage", {}).get("baseKeyUsage", {})
        if any(usage.values()):
            flags = {attribute: bool(usage.get(name)) for name, attribute in _KEY_USAGES.items()}
            builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
        return builder.sign(issuer.issued.key, hashes.SHA256())
