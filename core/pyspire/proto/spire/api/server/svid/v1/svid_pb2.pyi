from pyspire.proto.spire.api.types import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MintX509SVIDRequest(_message.Message):
    __slots__ = ("csr", "ttl")
    CSR_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    ttl: int
    def __init__(self, csr: _Optional[bytes] = ..., ttl: _Optional[int] = ...) -> None: ...

class MintX509SVIDResponse(_message.Message):
    __slots__ = ("svid",)
    SVID_FIELD_NUMBER: _ClassVar[int]
    svid: _types_pb2.X509SVID
    def __init__(self, svid: _Optional[_Union[_types_pb2.X509SVID, _Mapping]] = ...) -> None: ...

class MintJWTSVIDRequest(_message.Message):
    __slots__ = ("id", "audience", "ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    id: _types_pb2.SPIFFEID
    audience: _containers.RepeatedScalarFieldContainer[str]
    ttl: int
    def __init__(self, id: _Optional[_Union[_types_pb2.SPIFFEID, _Mapping]] = ..., audience: _Optional[_Iterable[str]] = ..., ttl: _Optional[int] = ...) -> None: ...

class MintJWTSVIDResponse(_message.Message):
    __slots__ = ("svid",)
    SVID_FIELD_NUMBER: _ClassVar[int]
    svid: _types_pb2.JWTSVID
    def __init__(self, svid: _Optional[_Union[_types_pb2.JWTSVID, _Mapping]] = ...) -> None: ...

class MintWITSVIDRequest(_message.Message):
    __slots__ = ("id", "public_key", "ttl", "signing_algorithm")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    SIGNING_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    id: _types_pb2.SPIFFEID
    public_key: bytes
    ttl: int
    signing_algorithm: str
    def __init__(self, id: _Optional[_Union[_types_pb2.SPIFFEID, _Mapping]] = ..., public_key: _Optional[bytes] = ..., ttl: _Optional[int] = ..., signing_algorithm: _Optional[str] = ...) -> None: ...

class MintWITSVIDResponse(_message.Message):
    __slots__ = ("svid",)
    SVID_FIELD_NUMBER: _ClassVar[int]
    svid: _types_pb2.WITSVID
    def __init__(self, svid: _Optional[_Union[_types_pb2.WITSVID, _Mapping]] = ...) -> None: ...

class NewX509SVIDParams(_message.Message):
    __slots__ = ("entry_id", "csr")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    csr: bytes
    def __init__(self, entry_id: _Optional[str] = ..., csr: _Optional[bytes] = ...) -> None: ...

class BatchNewX509SVIDRequest(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[NewX509SVIDParams]
    def __init__(self, params: _Optional[_Iterable[_Union[NewX509SVIDParams, _Mapping]]] = ...) -> None: ...

class BatchNewX509SVIDResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "svid")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        SVID_FIELD_NUMBER: _ClassVar[int]
        status: _types_pb2.Status
        svid: _types_pb2.X509SVID
        def __init__(self, status: _Optional[_Union[_types_pb2.Status, _Mapping]] = ..., svid: _Optional[_Union[_types_pb2.X509SVID, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchNewX509SVIDResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchNewX509SVIDResponse.Result, _Mapping]]] = ...) -> None: ...

class NewJWTSVIDRequest(_message.Message):
    __slots__ = ("entry_id", "audience")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entry_id: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ...) -> None: ...

class NewJWTSVIDResponse(_message.Message):
    __slots__ = ("svid",)
    SVID_FIELD_NUMBER: _ClassVar[int]
    svid: _types_pb2.JWTSVID
    def __init__(self, svid: _Optional[_Union[_types_pb2.JWTSVID, _Mapping]] = ...) -> None: ...

class NewWITSVIDParams(_message.Message):
    __slots__ = ("entry_id", "public_key", "signing_algorithm")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNING_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    public_key: bytes
    signing_algorithm: str
    def __init__(self, entry_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., signing_algorithm: _Optional[str] = ...) -> None: ...

class BatchNewWITSVIDRequest(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[NewWITSVIDParams]
    def __init__(self, params: _Optional[_Iterable[_Union[NewWITSVIDParams, _Mapping]]] = ...) -> None: ...

class BatchNewWITSVIDResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "svid")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        SVID_FIELD_NUMBER: _ClassVar[int]
        status: _types_pb2.Status
        svid: _types_pb2.WITSVID
        def __init__(self, status: _Optional[_Union[_types_pb2.Status, _Mapping]] = ..., svid: _Optional[_Union[_types_pb2.WITSVID, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchNewWITSVIDResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchNewWITSVIDResponse.Result, _Mapping]]] = ...) -> None: ...

class NewDownstreamX509CARequest(_message.Message):
    __slots__ = ("csr", "preferred_ttl")
    CSR_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_TTL_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    preferred_ttl: int
    def __init__(self, csr: _Optional[bytes] = ..., preferred_ttl: _Optional[int] = ...) -> None: ...

class NewDownstreamX509CAResponse(_message.Message):
    __slots__ = ("ca_cert_chain", "x509_authorities")
    CA_CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    ca_cert_chain: _containers.RepeatedScalarFieldContainer[bytes]
    x509_authorities: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ca_cert_chain: _Optional[_Iterable[bytes]] = ..., x509_authorities: _Optional[_Iterable[bytes]] = ...) -> None: ...
