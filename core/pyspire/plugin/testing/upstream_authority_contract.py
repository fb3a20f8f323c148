"""The UpstreamAuthority contract: the server's CA signed as an intermediate it can use.

What the server relies on: the certificate holds the key of the CSR (which the server makes
as SPIRE does: its CA subject, the trust domain's ID as URI SAN), is a CA for the trust
domain (CA=true, keyCertSign, cRLSign, the trust domain's SPIFFE ID as its only URI SAN),
chains through ``ca_chain`` to one of ``upstream_roots``, does not outlive the TTL asked
for, and a request that is not a valid CSR is refused on purpose. The optional hooks either
work or raise ``Unimplemented``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import PluginError, Unimplemented
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import make_csr
from pyspire.plugin.types import Role
from pyspire.plugin.upstream import JwtKey

__all__ = ["UpstreamAuthorityContract"]

CLOCK_SLACK = timedelta(minutes=1)


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


class UpstreamAuthorityContract(PluginContract):
    """Subclass as ``TestAcmeUpstream(UpstreamAuthorityContract)``; set ``plugin`` and ``plugin_data``."""

    role: ClassVar[Role] = "server"
    plugin_type: ClassVar[str] = "UpstreamAuthority"
    preferred_ttl: ClassVar[timedelta] = timedelta(hours=1)
    """The ``ca_ttl`` the suite asks for; it must be shorter than the upstream's own CA."""

    @pytest.fixture
    def upstream(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[UpstreamAuthority]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        assert isinstance(handle, UpstreamAuthority)
        yield handle
        handle.close()

    def test_minted_ca_is_an_intermediate_for_the_trust_domain(self, upstream: UpstreamAuthority) -> None:
        csr, key = make_csr(TEST_TRUST_DOMAIN)
        minted = upstream.mint_x509_ca(csr, self.preferred_ttl)
        certificate = minted.ca_chain[0]
        assert _public(certificate.public_key()) == _public(key.public_key()), "not the CSR's key"
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca, "the certificate is not a CA"
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign, "keyCertSign missing"
        assert usage.crl_sign, "cRLSign missing"
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [TEST_TRUST_DOMAIN.id_string()]
        for child, parent in itertools.pairwise(minted.ca_chain):
            child.verify_directly_issued_by(parent)
        assert any(_issued_by(minted.ca_chain[-1], root) for root in minted.upstream_roots), (
            "the chain does not end at one of upstream_roots"
        )
        for root in minted.upstream_roots:
            root.verify_directly_issued_by(root)

    def test_the_ttl_asked_for_is_not_exceeded(self, upstream: UpstreamAuthority) -> None:
        csr, _ = make_csr(TEST_TRUST_DOMAIN)
        minted = upstream.mint_x509_ca(csr, self.preferred_ttl)
        now = datetime.now(UTC)
        assert minted.ca_chain[0].not_valid_after_utc <= now + self.preferred_ttl + CLOCK_SLACK
        assert minted.ca_chain[0].not_valid_before_utc <= now + CLOCK_SLACK

    def test_minting_again_gives_a_new_certificate_under_the_same_roots(self, upstream: UpstreamAuthority) -> None:
        first = upstream.mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], self.preferred_ttl)
        second = upstream.mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], self.preferred_ttl)
        assert first.ca_chain[0].serial_number != second.ca_chain[0].serial_number
        assert set(first.upstream_roots) == set(second.upstream_roots)

    @pytest.mark.parametrize("request_kind", ["garbage", "empty", "tampered"])
    def test_a_request_that_is_not_a_valid_csr_is_refused(self, upstream: UpstreamAuthority, request_kind: str) -> None:
        csr, _ = make_csr(TEST_TRUST_DOMAIN)
        bad = {"garbage": b"\x30\x03not a CSR", "empty": b"", "tampered": csr[:-8] + bytes(8)}[request_kind]
        with pytest.raises(PluginError) as raised:
            upstream.mint_x509_ca(bad, self.preferred_ttl)
        assert_deliberate(raised.value, upstream)

    def test_jwt_keys_are_published_or_unimplemented(self, upstream: UpstreamAuthority) -> None:
        key = JwtKey(
            "contract-jwt-key",
            _public(ec.generate_private_key(ec.SECP256R1()).public_key()),
            datetime.now(UTC) + timedelta(hours=1),
        )
        if not upstream.implements("publish_jwt_key"):
            with pytest.raises(Unimplemented):
                upstream.publish_jwt_key(key)
            return
        try:
            published = upstream.publish_jwt_key(key)
        except Unimplemented:
            return  # implemented only to say "not by this upstream", as SPIRE's disk plugin does
        assert key.key_id in {k.key_id for k in published}

    def test_upstream_trust_covers_the_roots_it_signs_under(self, upstream: UpstreamAuthority) -> None:
        minted = upstream.mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], self.preferred_ttl)
        if not upstream.implements("upstream_trust"):
            with pytest.raises(Unimplemented):
                upstream.upstream_trust()
            return
        trust = upstream.upstream_trust()
        assert set(minted.upstream_roots) <= set(trust.x509_roots)


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
