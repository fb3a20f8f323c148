"""gcp_cas against the fake CA Service over Google's real client: what it asks for, which CA signs, what it refuses."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyspire.plugin import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
    Unimplemented,
)
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import TEST_TRUST_DOMAIN, load_plugin, make_core_config, make_csr
from pyspire.plugin.upstream import JwtKey
from pyspire_gcp_cas.authority import certificate_id

from plugins.gcp_cas.tests.conftest import LABEL, Authority
from tests.support.free_port import free_port
from tests.support.gcp_cas import FakeCas

HOUR = timedelta(hours=1)


def load(plugin_data: dict[str, Any], tmp_path: Path) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "gcp_cas", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def mint(handle: UpstreamAuthority, ttl: timedelta = HOUR) -> Any:
    return handle.mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], ttl)


def csr_with_a_full_subject() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A CSR with two of each name attribute, a DNS SAN and two URIs: only some of it may reach CA Service."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Oregon"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Ohio"),
        (NameOID.LOCALITY_NAME, "Portland"),
        (NameOID.LOCALITY_NAME, "Salem"),
        (NameOID.ORGANIZATION_NAME, "SPIFFE"),
        (NameOID.ORGANIZATION_NAME, "Other org"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Platform"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Other unit"),
        (NameOID.COMMON_NAME, "spire server CA"),
    ]
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://example.org"),
                    x509.DNSName("spire.example.org"),
                    x509.UniformResourceIdentifier("spiffe://example.org/extra"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER), key


def spki(key: ec.EllipticCurvePrivateKey, encoding: serialization.Encoding) -> bytes:
    return key.public_key().public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_request_is_spires_structured_config(authority: Authority, tmp_path: Path) -> None:
    csr, key = csr_with_a_full_subject()
    minted = load(authority.plugin_data(), tmp_path).mint_x509_ca(csr, timedelta(hours=2))
    [request] = authority.cas.requests
    assert request.parent == authority.pool
    assert request.issuing_certificate_authority_id == "issuing"
    expected_id = base64.urlsafe_b64encode(hashlib.sha256(spki(key, serialization.Encoding.DER)).digest())
    assert (
        request.certificate_id
        == expected_id.decode().rstrip("=")
        == certificate_id(spki(key, serialization.Encoding.DER))
    )
    assert len(request.certificate_id) == 43
    assert request.body["lifetime"] == "7200s"
    assert "pemCsr" not in request.body
    config = request.body["config"]
    assert base64.b64decode(config["publicKey"]["key"]) == spki(key, serialization.Encoding.PEM)
    assert config["publicKey"]["format"] in ("PEM", 1)
    assert config["subjectConfig"] == {
        "subject": {"commonName": "spire server CA", "organization": "SPIFFE", "organizationalUnit": "Platform",
                    "locality": "Portland", "province": "Oregon"},
        "subjectAltName": {"uris": ["spiffe://example.org", "spiffe://example.org/extra"]},
    }  # fmt: skip
    assert config["x509Config"] == {
        "caOptions": {"isCa": True, "maxIssuerPathLength": 0},
        "keyUsage": {"baseKeyUsage": {"certSign": True, "crlSign": True}},
    }
    ca = minted.ca_chain[0]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert ca.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME) == []  # SPIRE sends no country
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(hours=2)


def test_the_chain_stops_below_the_root_which_is_the_upstream_root(authority: Authority, tmp_path: Path) -> None:
    minted = mint(load(authority.plugin_data(), tmp_path))
    assert minted.ca_chain[1:] == (authority.ca.issued.certificate,)
    minted.ca_chain[0].verify_directly_issued_by(authority.ca.issued.certificate)
    assert minted.upstream_roots == (authority.root.root,)


def test_a_labelled_root_signs_directly(authority: Authority, tmp_path: Path) -> None:
    authority.ca.labels.clear()
    authority.root.labels.update([LABEL])
    minted = mint(load(authority.plugin_data(), tmp_path))
    assert len(minted.ca_chain) == 1
    minted.ca_chain[0].verify_directly_issued_by(authority.root.root)
    assert minted.upstream_roots == (authority.root.root,)


def test_the_ca_that_expires_first_signs_and_every_enabled_root_is_trusted(
    authority: Authority, tmp_path: Path
) -> None:
    cas, pool = authority.cas, authority.pool
    now = datetime.now(UTC)
    other_root = cas.add_ca(pool, "other-root", {}, lifetime=timedelta(days=5), created=now - timedelta(days=1))
    # Expires before "issuing" (created a minute ago with a day's lifetime): it signs.
    first = cas.add_ca(pool, "first", dict([LABEL]), issuer=other_root, created=now - timedelta(hours=2))
    cas.add_ca(pool, "sibling", dict([LABEL]), issuer=authority.root, lifetime=timedelta(days=2))
    minted = mint(load(authority.plugin_data(), tmp_path))
    assert authority.cas.requests[0].issuing_certificate_authority_id == "first"
    assert minted.ca_chain[1:] == (first.issued.certificate,)
    # The signing chain's root first, then the others' roots once each ("issuing" and "sibling" share one).
    assert minted.upstream_roots == (other_root.root, authority.root.root)


def test_cas_that_are_not_enabled_are_set_aside(authority: Authority, tmp_path: Path) -> None:
    cas, pool = authority.cas, authority.pool
    other_root = cas.add_ca(pool, "other-root", {})
    for number, state in enumerate(["DISABLED", "STAGED", "AWAITING_USER_ACTIVATION", "DELETED"]):
        expires_first = datetime.now(UTC) - timedelta(hours=5 - number)
        cas.add_ca(pool, f"not-{number}", dict([LABEL]), state=state, issuer=other_root, created=expires_first)
    minted = mint(load(authority.plugin_data(), tmp_path))
    assert authority.cas.requests[0].issuing_certificate_authority_id == "issuing"
    assert minted.upstream_roots == (authority.root.root,)  # the disabled CAs' root is not trusted


def test_no_labelled_ca_is_invalid_argument_naming_the_pair(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(label_value="staging"), tmp_path)
    with pytest.raises(
        InvalidArgument, match=rf'gcp_cas\): no certificate authorities found with label pair "{LABEL[0]}":"staging"$'
    ):
        mint(handle)
    assert authority.cas.requests == []


def test_no_enabled_labelled_ca_is_invalid_argument(authority: Authority, tmp_path: Path) -> None:
    authority.ca.state = "DISABLED"
    handle = load(authority.plugin_data(), tmp_path)
    message = (
        rf'gcp_cas\): no certificate authorities found in ENABLED state with label pair "{LABEL[0]}":"{LABEL[1]}"$'
    )
    with pytest.raises(InvalidArgument, match=message):
        mint(handle)


def test_without_a_pool_every_pool_of_the_region_is_searched(authority: Authority, tmp_path: Path) -> None:
    cas = authority.cas
    authority.ca.labels.clear()
    for number in range(4):  # more pools and CAs than fit a page of the fake
        cas.add_pool(f"empty-{number}")
    pool = cas.add_pool("later")
    for number in range(3):
        cas.add_ca(pool, f"unlabelled-{number}", {})
    chosen = cas.add_ca(pool, "labelled", dict([LABEL]), issuer=authority.root)
    cas.add_pool("elsewhere", location="projects/test-project/locations/europe-west1")
    minted = mint(load(authority.plugin_data(ca_pool=None), tmp_path))
    [request] = cas.requests
    assert (request.parent, request.issuing_certificate_authority_id) == (pool, "labelled")
    assert minted.ca_chain[1:] == (chosen.issued.certificate,)


def test_labelled_cas_in_two_pools_are_refused(authority: Authority, tmp_path: Path) -> None:
    pool = authority.cas.add_pool("second")
    authority.cas.add_ca(pool, "also-labelled", dict([LABEL]))
    handle = load(authority.plugin_data(ca_pool=None), tmp_path)
    with pytest.raises(
        Internal, match="failed to load root CAs: found authorities with matching labels across multiple pools"
    ):
        mint(handle)
    assert authority.cas.requests == []


def test_a_configured_pool_is_the_only_one_searched(authority: Authority, tmp_path: Path) -> None:
    pool = authority.cas.add_pool("second")
    authority.cas.add_ca(pool, "also-labelled", dict([LABEL]), created=datetime.now(UTC) - timedelta(hours=12))
    minted = mint(load(authority.plugin_data(), tmp_path))
    assert authority.cas.requests[0].parent == authority.pool
    assert minted.upstream_roots == (authority.root.root,)


def test_the_same_key_twice_is_cas_service_refusal(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    csr, _ = make_csr(TEST_TRUST_DOMAIN)
    handle.mint_x509_ca(csr, HOUR)
    with pytest.raises(AlreadyExists, match=r"failed to create certificate: ALREADY_EXISTS: .*already exists"):
        handle.mint_x509_ca(csr, HOUR)


@pytest.mark.parametrize(
    ("operation", "status", "error", "action"),
    [
        ("listCaPools", 403, PermissionDenied, "failed to load root CAs: PERMISSION_DENIED"),
        ("listCertificateAuthorities", 500, Internal, "failed to load root CAs: INTERNAL"),
        ("createCertificate", 403, PermissionDenied, "failed to create certificate: PERMISSION_DENIED"),
        ("createCertificate", 400, InvalidArgument, "failed to create certificate: INVALID_ARGUMENT"),
    ],
)
def test_cas_service_refusals_keep_their_status(
    authority: Authority, tmp_path: Path, operation: str, status: int, error: type[Exception], action: str
) -> None:
    authority.cas.fail[operation] = status
    handle = load(authority.plugin_data(ca_pool=None), tmp_path)
    with pytest.raises(error, match=f"gcp_cas\\): {action}: injected failure of {operation}"):
        mint(handle)


def test_an_issuing_ca_disabled_meanwhile_is_failed_precondition(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    authority.cas.before_create = lambda: setattr(authority.ca, "state", "DISABLED")
    with pytest.raises(FailedPrecondition, match=r"failed to create certificate: FAILED_PRECONDITION: .*DISABLED"):
        mint(handle)


def test_cas_service_out_of_reach_is_unavailable(authority: Authority, tmp_path: Path) -> None:
    handle = load({**authority.plugin_data(), "cas_endpoint": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    with pytest.raises(Unavailable, match="failed to load root CAs: cannot reach CA Service"):
        mint(handle)


def test_an_answer_without_a_chain_gives_no_ca(authority: Authority, tmp_path: Path) -> None:
    authority.cas.drop_chain = True
    with pytest.raises(Internal, match=r"gcp_cas\): got no certificates in the chain$"):
        mint(load(authority.plugin_data(), tmp_path))


def test_a_certificate_for_another_key_gives_no_ca(authority: Authority, tmp_path: Path) -> None:
    authority.cas.substitute_key = True
    with pytest.raises(Internal, match="the issued certificate is not for the CSR's public key"):
        mint(load(authority.plugin_data(), tmp_path))


def test_a_forged_csr_never_reaches_cas_service(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    csr, _ = make_csr(TEST_TRUST_DOMAIN)
    with pytest.raises(InvalidArgument, match="signature does not verify"):
        handle.mint_x509_ca(csr[:-8] + bytes(8), HOUR)
    with pytest.raises(InvalidArgument, match="unable to parse CSR"):
        handle.mint_x509_ca(b"\x30\x03abc", HOUR)
    assert authority.cas.requests == []


def test_jwt_keys_are_not_published(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    key = JwtKey("kid", spki(ec.generate_private_key(ec.SECP256R1()), serialization.Encoding.DER))
    with pytest.raises(Unimplemented, match="publishing upstream is unsupported"):
        handle.publish_jwt_key(key)


def refused(plugin_data: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(CatalogError) as raised:
        load(plugin_data, tmp_path)
    message = str(raised.value)
    assert message.startswith('plugins: UpstreamAuthority "gcp_cas": ')
    return message


@pytest.mark.parametrize(
    ("key", "spire_name"),
    [
        ("project_name", "Project"),
        ("region_name", "Location"),
        ("label_key", "LabelKey"),
        ("label_value", "LabelValue"),
    ],
)
def test_a_missing_key_is_named_as_spire_names_it(
    authority: Authority, tmp_path: Path, key: str, spire_name: str
) -> None:
    message = refused(authority.plugin_data(**{key: ""}), tmp_path)
    assert f'key "root_cert_spec.{key}": root_cert_spec.{spire_name} is missing' in message


def test_a_missing_block_names_the_first_missing_key(authority: Authority, tmp_path: Path) -> None:
    assert "root_cert_spec.Project is missing" in refused({"cas_endpoint": authority.cas.url}, tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("label_value", "prod OR labels.x:y", "is not a Google label value"),
        ("label_key", "Spire", "is not a Google label key"),
        ("label_key", "1abc", "is not a Google label key"),
        ("project_name", "p/locations/x", "is not a resource ID"),
        ("ca_pool", "a pool", "is not a resource ID"),
    ],
)
def test_values_that_would_name_something_else_are_refused(
    authority: Authority, tmp_path: Path, key: str, value: str, why: str
) -> None:
    message = refused(authority.plugin_data(**{key: value}), tmp_path)
    assert f'key "root_cert_spec.{key}": "{value}" {why}' in message


def test_an_unknown_key_and_a_bad_endpoint_are_named(authority: Authority, tmp_path: Path) -> None:
    assert 'key "root_cert_spec.pool"' in refused(authority.plugin_data(pool="spire"), tmp_path)
    message = refused({**authority.plugin_data(), "cas_endpoint": "privateca.example"}, tmp_path)
    assert 'key "cas_endpoint": "privateca.example" is not an http:// or https:// URL' in message


def test_without_google_credentials_the_plugin_does_not_load(
    authority: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert "failed to load Google Application Default Credentials" in refused(authority.plugin_data(), tmp_path)


def test_credentials_cas_service_does_not_know_are_refused(
    authority: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = FakeCas()  # its service account's key is not one the CA Service fake knows
    (tmp_path / "stranger").mkdir()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(stranger.service_account_file(tmp_path / "stranger")))
    stranger.stop()
    handle = load(authority.plugin_data(), tmp_path)
    with pytest.raises(PermissionDenied, match="failed to load root CAs: UNAUTHENTICATED: "):
        mint(handle)
    assert authority.cas.requests == []
