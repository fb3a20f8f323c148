"""Hypothesis strategies for protobuf messages of any type, built from their descriptors.

Every field may be left unset or given a value of its type; strings come from an alphabet of
what SPIFFE IDs, trust domains, selectors and URLs are made of (and of what breaks them), and
bytes may be a real certificate, a corrupted one, or noise. Nested messages are generated to a
few levels. Enough to drive the server's request conversions through their refusals.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

_PIECES = [
    "spiffe://", "example.org", "EXAMPLE.org", "other.org", "/", "//", "/spire/agent/x", "/spire/server", "..", ".",
    "a", "Z", "0", "-", "_", "%2e", ":", "unix", "uid:0", "https://", "http://", "@", "?", "#", " ", "\n", "é", "\x00",
]  # fmt: skip
texts = st.one_of(st.lists(st.sampled_from(_PIECES), max_size=6).map("".join), st.text(max_size=12))

_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, 1, -1, low, high, 60, 86400]).filter(lambda v: low <= v <= high), st.integers(low, high)
    )


def _scalar(field: FieldDescriptor, blobs: st.SearchStrategy[bytes]) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return texts
    if field.type == FieldDescriptor.TYPE_BYTES:
        return blobs
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=False, width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    if field.type == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 50))
    low, high = _INTEGER_RANGES[field.type]
    return _integers(low, high)


def messages(descriptor: Descriptor, blobs: st.SearchStrategy[bytes], depth: int = 3) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of their fields set."""
    cls = GetMessageClass(descriptor)

    def field_values(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth == 0 or field.message_type.GetOptions().map_entry:
                return None
            value: st.SearchStrategy[Any] = messages(field.message_type, blobs, depth - 1)
        else:
            value = _scalar(field, blobs)
        if field.is_repeated:
            return st.lists(value, max_size=3)
        return value

    optional = {field.name: strategy for field in descriptor.fields if (strategy := field_values(field)) is not None}

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            if isinstance(value, list):
                repeated = getattr(message, name)
                for item in value:
                    if isinstance(item, Message):
                        repeated.add().CopyFrom(item)
                    else:
                        repeated.append(item)
            elif isinstance(value, Message):
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=optional).map(build)
