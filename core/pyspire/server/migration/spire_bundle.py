"""SPIRE's stored bundle: the ``spire.common.Bundle`` message in ``bundles.data``.

Fields as SPIRE v1.13 writes them: ``trust_domain_id`` (1, ``spiffe://<td>``), ``root_cas`` (2,
``Certificate{der_bytes = 1, tainted_key = 2}``), ``jwt_signing_keys`` (3, ``PublicKey{pkix_bytes
= 1, kid = 2, not_after = 3, tainted_key = 4}``), ``refresh_hint`` (4, seconds) and
``sequence_number`` (5). The message type is built here from those facts, so decoding needs no
generated code.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from pyspire.plugin.records import BundleRecord, JwtAuthority, X509Authority
from pyspire.spiffe import SpiffeId, SpiffeIdError

__all__ = ["decode_spire_bundle"]

_F = descriptor_pb2.FieldDescriptorProto


def _message_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="pyspire/migration/spire_common.proto", package="pyspire.migration")
    certificate = file.message_type.add(name="Certificate")
    certificate.field.add(name="der_bytes", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    certificate.field.add(name="tainted_key", number=2, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    key = file.message_type.add(name="PublicKey")
    key.field.add(name="pkix_bytes", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    key.field.add(name="kid", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    key.field.add(name="not_after", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    key.field.add(name="tainted_key", number=4, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    bundle = file.message_type.add(name="Bundle")
    bundle.field.add(name="trust_domain_id", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    bundle.field.add(
        name="root_cas",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".pyspire.migration.Certificate",
    )
    bundle.field.add(
        name="jwt_signing_keys",
        number=3,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".pyspire.migration.PublicKey",
    )
    bundle.field.add(name="refresh_hint", number=4, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    bundle.field.add(name="sequence_number", number=5, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pyspire.migration.Bundle"))


_BUNDLE = _message_class()


def decode_spire_bundle(data: bytes) -> BundleRecord:
    """The bundle SPIRE stored; ValueError naming what is wrong with it."""
    message = _BUNDLE()
    try:
        message.ParseFromString(bytes(data))
    except DecodeError as err:
        raise ValueError(f"not a SPIRE bundle: {err}") from None
    try:
        trust_domain = SpiffeId.parse(message.trust_domain_id).trust_domain
    except SpiffeIdError as err:
        raise ValueError(f"bundle trust_domain_id {message.trust_domain_id!r}: {err}") from None
    return BundleRecord(
        trust_domain=trust_domain,
        x509_authorities=tuple(X509Authority(bytes(ca.der_bytes), ca.tainted_key) for ca in message.root_cas),
        jwt_authorities=tuple(
            JwtAuthority(key.kid, bytes(key.pkix_bytes), key.not_after, key.tainted_key)
            for key in message.jwt_signing_keys
        ),
        refresh_hint=message.refresh_hint,
        sequence_number=message.sequence_number,
    )
