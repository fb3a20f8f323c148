"""X509-SVID behaviour beyond the shared vectors, on freshly made certificates."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import (
    Bundle,
    BundleError,
    BundleSet,
    SpiffeId,
    TrustDomain,
    X509Svid,
    X509SvidError,
    verify_x509_svid,
)
from pyspire.spiffe.x509svid import check_verified_path

from tests.support.pki import Issued, make_ca, make_leaf

TD = TrustDomain("example.org")


def test_chain_through_an_intermediate_verifies_and_openssl_agrees(tmp_path: Path) -> None:
    root = make_ca()
    intermediate = make_ca(issuer=root, name="intermediate")
    leaf = make_leaf(intermediate, dns_names=("web.example.org",))
    svid = X509Svid.from_parts([leaf.certificate, intermediate.certificate], leaf.key)
    spiffe_id, (path,) = verify_x509_svid(svid.chain, Bundle(TD, [root.certificate]))
    assert spiffe_id == SpiffeId.parse("spiffe://example.org/workload")
    assert path == [leaf.certificate, intermediate.certificate, root.certificate]

    certificates, key = svid.marshal()
    (tmp_path / "svid.pem").write_bytes(certificates)
    (tmp_path / "bundle.pem").write_bytes(Bundle(TD, [root.certificate]).marshal_x509_pem())
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "bundle.pem"),
            "-untrusted",
            str(tmp_path / "svid.pem"),
            str(tmp_path / "svid.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert X509Svid.parse(certificates, key).spiffe_id == spiffe_id


def test_a_remembered_intermediate_with_a_forged_signature_is_not_trusted() -> None:
    """The CA-link memory is keyed by full DER: same TBS, other signature, no trust."""
    root = make_ca()
    intermediate = make_ca(issuer=root, name="intermediate")
    leaf = make_leaf(intermediate)
    bundle = Bundle(TD, [root.certificate])
    verify_x509_svid([leaf.certificate, intermediate.certificate], bundle)  # remembered now

    der = bytearray(intermediate.certificate.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit inside the signature
    forged = x509.load_der_x509_certificate(bytes(der))
    assert forged.tbs_certificate_bytes == intermediate.certificate.tbs_certificate_bytes
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid([leaf.certificate, forged], bundle)
    assert raised.value.code == "untrusted"


def test_expired_intermediate_fails_even_when_the_leaf_is_valid() -> None:
    root = make_ca(lifetime=timedelta(days=30), not_before=datetime.now(UTC) - timedelta(days=2))
    intermediate = make_ca(issuer=root, not_before=datetime.now(UTC) - timedelta(days=2), lifetime=timedelta(days=1))
    leaf = make_leaf(intermediate)
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid([leaf.certificate, intermediate.certificate], Bundle(TD, [root.certificate]))
    assert raised.value.code == "expired"
    assert "certificate 1 of the chain" in str(raised.value)


def test_path_length_constraint_is_enforced() -> None:
    root = make_ca(path_length=0)
    intermediate = make_ca(issuer=root, name="intermediate")
    leaf = make_leaf(intermediate)
    with pytest.raises(X509SvidError, match="path length"):
        verify_x509_svid([leaf.certificate, intermediate.certificate], Bundle(TD, [root.certificate]))


def test_overlong_chain_is_refused_before_any_signature_check() -> None:
    root = make_ca()
    leaf = make_leaf(root)
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid([leaf.certificate] + [root.certificate] * 20, Bundle(TD, [root.certificate]))
    assert raised.value.code == "chain_too_long"


def test_only_the_leafs_own_trust_domain_bundle_is_used() -> None:
    other_root = make_ca("other.org")
    leaf = make_leaf(other_root, "spiffe://example.org/impostor")
    bundles = BundleSet(
        [Bundle(TrustDomain("other.org"), [other_root.certificate]), Bundle(TD, [make_ca().certificate])]
    )
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid([leaf.certificate], bundles)
    assert raised.value.code == "untrusted"


def test_clock_inside_validity_window_is_required() -> None:
    root = make_ca()
    leaf = make_leaf(root, not_before=datetime.now(UTC) + timedelta(seconds=30))
    bundle = Bundle(TD, [root.certificate])
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid([leaf.certificate], bundle)
    assert raised.value.code == "not_yet_valid"
    verify_x509_svid([leaf.certificate], bundle, now=datetime.now(UTC) + timedelta(seconds=31))


def test_hint_and_expiry_are_kept() -> None:
    root: Issued = make_ca()
    leaf = make_leaf(root)
    svid = X509Svid.from_parts([leaf.certificate], leaf.key, hint="internal")
    assert svid.hint == "internal"
    assert svid.expires_at == leaf.certificate.not_valid_after_utc


def test_leaf_with_an_unknown_curve_is_a_parse_error_not_a_crash() -> None:
    """Regression: cryptography parses keys lazily and raised UnsupportedAlgorithm from
    public_key(); a corrupted curve OID in the leaf must be an X509SvidError."""
    leaf = make_leaf(make_ca())
    chain_der, key_der = X509Svid.from_parts([leaf.certificate], leaf.key).marshal_raw()
    p256_oid = bytes.fromhex("06082a8648ce3d030107")
    corrupted = chain_der.replace(p256_oid, bytes.fromhex("06082a8648ce3d030100"), 1)
    assert corrupted != chain_der
    with pytest.raises(X509SvidError) as raised:
        X509Svid.parse_raw(corrupted, key_der)
    assert raised.value.code == "cert_parse_error"


def test_a_certificate_whose_serial_is_not_positive_is_refused_by_name_without_a_warning() -> None:
    """Regression: cryptography loaded it with a deprecation warning (seen in CI) and it was accepted."""
    root = make_ca()
    der = root.certificate.public_bytes(serialization.Encoding.DER)
    serial = root.certificate.serial_number.to_bytes((root.certificate.serial_number.bit_length() + 8) // 8, "big")
    encoded = bytes([0x02, len(serial)]) + serial
    assert der.count(encoded) == 1
    negative = der.replace(encoded, bytes([0x02, len(serial), 0x80]) + serial[1:])  # same length, sign bit set
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(negative) + b"-----END CERTIFICATE-----\n"
    with pytest.raises(BundleError, match=r"serial number -[0-9]+ is not positive"):
        Bundle.parse_x509(TrustDomain.parse("example.org"), pem)
    key = root.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(X509SvidError, match=r"serial number -[0-9]+ is not positive"):
        X509Svid.parse(negative, key)


def test_a_certificate_repeating_an_extension_is_refused_by_name() -> None:
    """Regression: cryptography's DuplicateExtension (not a ValueError) escaped the parsers; the
    corruption property test found it about one run in four."""
    leaf = make_leaf(make_ca())
    chain_der, key_der = X509Svid.from_parts([leaf.certificate], leaf.key).marshal_raw()
    san_oid, eku_oid = bytes.fromhex("0603551d11"), bytes.fromhex("0603551d25")
    assert chain_der.count(eku_oid) == 1
    repeated = chain_der.replace(san_oid, eku_oid, 1)  # the SAN becomes a second extendedKeyUsage
    with pytest.raises(X509SvidError, match=r"repeats extension 2\.5\.29\.37") as raised:
        X509Svid.parse_raw(repeated, key_der)
    assert raised.value.code == "cert_parse_error"
    with pytest.raises(BundleError, match=r"repeats extension 2\.5\.29\.37"):
        Bundle.parse_x509(TD, repeated)


def test_a_certificate_of_an_unknown_version_is_refused_by_name() -> None:
    """Regression: cryptography's InvalidVersion (not a ValueError) escaped the parsers."""
    leaf = make_leaf(make_ca())
    chain_der, key_der = X509Svid.from_parts([leaf.certificate], leaf.key).marshal_raw()
    v3 = bytes.fromhex("a003020102")
    assert chain_der.count(v3) == 1
    v2 = chain_der.replace(v3, bytes.fromhex("a003020101"))
    with pytest.raises(X509SvidError, match="unknown version 1") as raised:
        X509Svid.parse_raw(v2, key_der)
    assert raised.value.code == "cert_parse_error"
    with pytest.raises(BundleError, match="unknown version 1"):
        Bundle.parse_x509(TD, v2)


def test_a_path_verified_elsewhere_gets_the_spiffe_rules_but_no_signature_check() -> None:
    root, other = make_ca("example.org"), make_ca("other.org", name="other CA")
    bundles = BundleSet(
        [Bundle(TrustDomain("example.org"), [root.certificate]), Bundle(TrustDomain("other.org"), [other.certificate])]
    )
    leaf = make_leaf(root, "spiffe://example.org/web").certificate
    assert str(check_verified_path([leaf, root.certificate], bundles)) == "spiffe://example.org/web"
    # The anchor must be an authority of the leaf's own trust domain.
    forged = make_leaf(other, "spiffe://example.org/web").certificate
    with pytest.raises(X509SvidError, match=r'no chain to an authority of trust domain "example\.org"'):
        check_verified_path([forged, other.certificate], bundles)
    # A lone certificate is no SVID under an authority; an expired one is refused whatever
    # the TLS library was told to check.
    with pytest.raises(X509SvidError, match="itself an authority"):
        check_verified_path([root.certificate], bundles)
    with pytest.raises(X509SvidError) as expired:
        check_verified_path([leaf, root.certificate], bundles, now=datetime.now(UTC) + timedelta(days=2))
    assert expired.value.code == "expired"
    with pytest.raises(X509SvidError) as no_bundle:
        check_verified_path([make_leaf(root, "spiffe://third.org/x").certificate, root.certificate], bundles)
    assert no_bundle.value.code == "bundle_not_found"
