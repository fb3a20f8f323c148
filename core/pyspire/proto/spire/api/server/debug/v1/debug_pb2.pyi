from pyspire.proto.spire.api.types import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("svid_chain", "uptime", "agents_count", "federated_bundles_count", "entries_count")
    class Cert(_message.Message):
        __slots__ = ("id", "expires_at", "subject")
        ID_FIELD_NUMBER: _ClassVar[int]
        EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
        SUBJECT_FIELD_NUMBER: _ClassVar[int]
        id: _types_pb2.SPIFFEID
        expires_at: int
        subject: str
        def __init__(self, id: _Optional[_Union[_types_pb2.SPIFFEID, _Mapping]] = ..., expires_at: _Optional[int] = ..., subject: _Optional[str] = ...) -> None: ...
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    AGENTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    svid_chain: _containers.RepeatedCompositeFieldContainer[GetInfoResponse.Cert]
    uptime: int
    agents_count: int
    federated_bundles_count: int
    entries_count: int
    def __init__(self, svid_chain: _Optional[_Iterable[_Union[GetInfoResponse.Cert, _Mapping]]] = ..., uptime: _Optional[int] = ..., agents_count: _Optional[int] = ..., federated_bundles_count: _Optional[int] = ..., entries_count: _Optional[int] = ...) -> None: ...
