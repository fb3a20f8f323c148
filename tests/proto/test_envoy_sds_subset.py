"""pyspire's copy of Envoy's SDS messages matches Envoy's own (xds-protos) field for field.

The agent serves SDS from a subset in a package of its own (core/pyspire/proto/envoy/sds.proto
says why). Only field numbers and wire types travel, so each field of the copy must have
Envoy's number, type and cardinality, and belong to the same oneof; fields Envoy has and the
copy lacks are simply not read.
"""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_spiffe_validator_config_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.type.v3 import semantic_version_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import status_pb2
from pyspire.proto.envoy import sds_pb2
from pyspire.proto.envoy_sds import SECRET_TYPE_URL, SPIFFE_VALIDATOR_TYPE_URL

PAIRS = [
    (sds_pb2.DiscoveryRequest, discovery_pb2.DiscoveryRequest),
    (sds_pb2.DiscoveryResponse, discovery_pb2.DiscoveryResponse),
    (sds_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest),
    (sds_pb2.DeltaDiscoveryResponse, discovery_pb2.DeltaDiscoveryResponse),
    (sds_pb2.Status, status_pb2.Status),
    (sds_pb2.Node, base_pb2.Node),
    (sds_pb2.BuildVersion, base_pb2.BuildVersion),
    (sds_pb2.SemanticVersion, semantic_version_pb2.SemanticVersion),
    (sds_pb2.DataSource, base_pb2.DataSource),
    (sds_pb2.Secret, secret_pb2.Secret),
    (sds_pb2.TlsCertificate, common_pb2.TlsCertificate),
    (sds_pb2.CertificateValidationContext, common_pb2.CertificateValidationContext),
    (sds_pb2.TypedExtensionConfig, extension_pb2.TypedExtensionConfig),
    (sds_pb2.SPIFFECertValidatorConfig, tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig),
    (
        sds_pb2.SPIFFECertValidatorConfig.TrustDomain,
        tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig.TrustDomain,
    ),
]
OURS_TO_ENVOYS = {ours.DESCRIPTOR.full_name: envoys.DESCRIPTOR.full_name for ours, envoys in PAIRS}


def _shape(field: FieldDescriptor, names: dict[str, str]) -> tuple[object, ...]:
    message = field.message_type.full_name if field.message_type else None
    return (
        field.number,
        field.type,
        field.is_repeated,
        names.get(message, message) if message else None,
        field.containing_oneof.name if field.containing_oneof else None,
    )


@pytest.mark.parametrize(("ours", "envoys"), PAIRS, ids=lambda m: m.DESCRIPTOR.name)
def test_every_field_of_the_copy_is_envoys_field(ours: type, envoys: type) -> None:
    mine: Descriptor = ours.DESCRIPTOR
    theirs: Descriptor = envoys.DESCRIPTOR
    for field in mine.fields:
        assert field.name in theirs.fields_by_name, f"{theirs.full_name} has no field {field.name}"
        envoy_field = theirs.fields_by_name[field.name]
        assert _shape(field, OURS_TO_ENVOYS) == _shape(envoy_field, {}), f"{mine.name}.{field.name}"


def test_the_type_urls_name_envoys_messages() -> None:
    assert f"type.googleapis.com/{secret_pb2.Secret.DESCRIPTOR.full_name}" == SECRET_TYPE_URL
    validator = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig.DESCRIPTOR.full_name
    assert f"type.googleapis.com/{validator}" == SPIFFE_VALIDATOR_TYPE_URL


def test_a_secret_written_with_the_copy_reads_back_with_envoys_messages() -> None:
    validator = sds_pb2.SPIFFECertValidatorConfig(
        trust_domains=[
            sds_pb2.SPIFFECertValidatorConfig.TrustDomain(name="example.org", trust_bundle={"inline_bytes": b"PEM"})
        ]
    )
    secret = sds_pb2.Secret(
        name="spiffe://example.org",
        validation_context=sds_pb2.CertificateValidationContext(
            custom_validator_config=sds_pb2.TypedExtensionConfig(
                name="envoy.tls.cert_validator.spiffe",
                typed_config={"type_url": SPIFFE_VALIDATOR_TYPE_URL, "value": validator.SerializeToString()},
            )
        ),
    )
    read = secret_pb2.Secret.FromString(secret.SerializeToString())
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert read.validation_context.custom_validator_config.typed_config.Unpack(config)
    assert config.trust_domains[0].name == "example.org"
    assert config.trust_domains[0].trust_bundle.inline_bytes == b"PEM"
