"""The CredentialComposer contract: composed credentials are still the server's SVIDs.

A composer adjusts the subject and adds extensions of workload X509-SVIDs, and adds claims to
workload JWT-SVIDs. What the server relies on: the SPIFFE ID, validity, key usages, basic
constraints and key identifiers stay the server's (the handle refuses extensions of those
kinds), the result still signs into a valid X509-SVID, and ``sub``, ``aud``, ``exp`` and
``iat`` come back unchanged. A composer implements at least one of the two hooks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.facades import CredentialComposer
from pyspire.plugin.testing.base import PluginContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import TestCa
from pyspire.plugin.types import Role
from pyspire.spiffe import SpiffeId, X509Svid, x509svid

__all__ = ["CredentialComposerContract"]

SERVER_SUBJECT = x509.Name(
    [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]
)
"""The subject the server gives workload X509-SVIDs before composers run."""


class CredentialComposerContract(PluginContract):
    """Subclass as ``TestAcmeComposer(CredentialComposerContract)``; set ``plugin`` and ``plugin_data``."""

    role: ClassVar[Role] = "server"
    plugin_type: ClassVar[str] = "CredentialComposer"
    workload_path: ClassVar[str] = "/workload"
    """The SPIFFE ID path the composed credentials are for."""

    @pytest.fixture
    def composer(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[CredentialComposer]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        assert isinstance(handle, CredentialComposer)
        yield handle
        handle.close()

    @property
    def spiffe_id(self) -> SpiffeId:
        """The workload's SPIFFE ID."""
        return SpiffeId.from_path(TEST_TRUST_DOMAIN, self.workload_path)

    def test_a_composer_composes_something(self, composer: CredentialComposer) -> None:
        assert composer.implements("compose_workload_x509_svid") or composer.implements("compose_workload_jwt_svid"), (
            "a CredentialComposer implements compose_workload_x509_svid, compose_workload_jwt_svid or both"
        )

    def test_composed_x509_svid_leaves_the_servers_parts_alone(self, composer: CredentialComposer) -> None:
        # The handle refuses (Internal) any extension the server owns, naming it.
        subject, extensions = composer.compose_workload_x509_svid(self.spiffe_id, SERVER_SUBJECT, ())
        assert isinstance(subject, x509.Name)
        assert all(isinstance(extension, x509.Extension) for extension in extensions)

    def test_composed_x509_svid_still_signs_into_a_valid_svid(self, composer: CredentialComposer) -> None:
        subject, extensions = composer.compose_workload_x509_svid(self.spiffe_id, SERVER_SUBJECT, ())
        ca = TestCa.create(TEST_TRUST_DOMAIN)
        key = ec.generate_private_key(ec.SECP256R1())
        start = datetime.now(UTC) - timedelta(seconds=10)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(self.spiffe_id))]), critical=False
            )
        )
        for extension in extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        leaf = builder.sign(ca.key, hashes.SHA256())
        svid = X509Svid.from_parts([leaf], key)
        verified_id, _ = x509svid.verify(svid.chain, ca.bundle())
        assert verified_id == self.spiffe_id

    def test_composed_jwt_claims_keep_the_servers_claims(self, composer: CredentialComposer) -> None:
        now = int(datetime.now(UTC).timestamp())
        claims = {"sub": str(self.spiffe_id), "aud": ["contract"], "exp": now + 300, "iat": now}
        composed = composer.compose_workload_jwt_svid(self.spiffe_id, dict(claims))
        for name, value in claims.items():
            assert composed.get(name) == value, f'the composer changed the "{name}" claim'
