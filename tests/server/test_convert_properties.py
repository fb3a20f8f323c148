"""Property tests over the server API's request conversions: only InvalidInput, never another exception.

Every request field an API handler turns into a record passes through these functions; a
value they cannot take must be refused by name (INVALID_ARGUMENT), not escape as a TypeError,
OverflowError or one of cryptography's exceptions (INTERNAL with a traceback).
"""

from __future__ import annotations

import contextlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, x448
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire import bundle_messages as client_bundles
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.api import convert
from pyspire.server.federation.documents import record_to_bundle
from pyspire.spiffe import TrustDomain

from tests.support.pki import make_ca, make_leaf
from tests.support.proto_strategies import messages, texts

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TD = TrustDomain.parse("example.org")

_CERTIFICATE = make_leaf(make_ca()).certificate.public_bytes(serialization.Encoding.DER)
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_KEY = make_ca().key.public_key().public_bytes(serialization.Encoding.DER, _SPKI)
# Keys a JWK cannot carry: refused, rather than stored and then impossible to serve.
_UNSERVABLE_KEYS = [
    dsa.generate_private_key(2048).public_key().public_bytes(serialization.Encoding.DER, _SPKI),
    x448.X448PrivateKey.generate().public_key().public_bytes(serialization.Encoding.DER, _SPKI),
    ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(serialization.Encoding.DER, _SPKI),
]


@st.composite
def _corrupted(draw: st.DrawFn, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


blobs = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([_CERTIFICATE, _KEY, b"", *_UNSERVABLE_KEYS]),
    _corrupted(_CERTIFICATE),
    _corrupted(_KEY),
    st.just(_CERTIFICATE.replace(bytes.fromhex("a003020102"), bytes.fromhex("a003020101"))),
)
_VALID_ENTRY = types_pb2.Entry(
    spiffe_id=types_pb2.SPIFFEID(trust_domain="example.org", path="/w"),
    parent_id=types_pb2.SPIFFEID(trust_domain="example.org", path="/node"),
    selectors=[types_pb2.Selector(type="unix", value="uid:0")],
)


def _overlay(base: types_pb2.Entry, changes: types_pb2.Entry) -> types_pb2.Entry:
    """``base`` with every field that ``changes`` sets replaced by its value there."""
    result = types_pb2.Entry()
    result.CopyFrom(base)
    for field, _ in changes.ListFields():
        result.ClearField(field.name)
    result.MergeFrom(changes)
    return result


# A valid entry with a few fields changed (most get past the first checks), or anything at all.
entries = st.one_of(
    messages(types_pb2.Entry.DESCRIPTOR, blobs).map(lambda changes: _overlay(_VALID_ENTRY, changes)),
    messages(types_pb2.Entry.DESCRIPTOR, blobs),
)
masks = st.one_of(st.none(), messages(types_pb2.EntryMask.DESCRIPTOR, blobs))


@SETTINGS
@given(entries)
def test_entry_conversion_raises_only_invalid_input(entry: types_pb2.Entry) -> None:
    with contextlib.suppress(convert.InvalidInput):
        converted = convert.entry_from_proto(entry, TD)
        assert convert.entry_from_proto(convert.entry_to_proto(converted), TD) == converted


@SETTINGS
@given(entries, masks)
def test_entry_update_raises_only_invalid_input(update: types_pb2.Entry, mask: types_pb2.EntryMask | None) -> None:
    existing = convert.entry_from_proto(_VALID_ENTRY, TD)
    with contextlib.suppress(convert.InvalidInput):
        convert.entry_update_from_proto(existing, update, mask, TD)


@SETTINGS
@given(messages(types_pb2.Bundle.DESCRIPTOR, blobs))
def test_bundle_conversions_raise_only_their_errors(bundle: types_pb2.Bundle) -> None:
    with contextlib.suppress(convert.InvalidInput):
        record = convert.bundle_from_proto(bundle)
        # What the server then does with an accepted record: serve it as a SPIFFE bundle and a JWKS.
        served = record_to_bundle(record)
        served.to_spiffe_document()
        served.marshal_jwks()
    # The clients' conversion (agent, CLI) of what a server answered: ValueErrors only.
    with contextlib.suppress(ValueError):
        client_bundles.bundle_from_proto(bundle)
    with contextlib.suppress(ValueError):
        client_bundles.tainted_key_ids(bundle)


@SETTINGS
@given(messages(types_pb2.FederationRelationship.DESCRIPTOR, blobs))
def test_federation_relationship_conversion_raises_only_invalid_input(
    relationship: types_pb2.FederationRelationship,
) -> None:
    with contextlib.suppress(convert.InvalidInput):
        convert.relationship_from_proto(relationship)


@SETTINGS
@given(
    messages(types_pb2.SPIFFEID.DESCRIPTOR, blobs),
    st.lists(messages(types_pb2.Selector.DESCRIPTOR, blobs), max_size=3),
    st.one_of(texts, st.text(max_size=300)),
)
def test_id_selector_and_dns_conversions_raise_only_invalid_input(
    spiffe_id: types_pb2.SPIFFEID, selectors: list[types_pb2.Selector], name: str
) -> None:
    for attempt in (
        lambda: convert.id_from_proto(spiffe_id),
        lambda: convert.agent_id_from_proto(spiffe_id, TD),
        lambda: convert.workload_id_from_proto(spiffe_id, TD),
        lambda: convert.member_id_from_proto(spiffe_id, TD, "parent ID"),
        lambda: convert.selectors_from_proto(selectors),
        lambda: convert.validate_dns_name(name),
    ):
        with contextlib.suppress(convert.InvalidInput):
            attempt()
