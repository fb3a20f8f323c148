from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSPECIFIED: _ClassVar[LogLevel]
    PANIC: _ClassVar[LogLevel]
    FATAL: _ClassVar[LogLevel]
    ERROR: _ClassVar[LogLevel]
    WARN: _ClassVar[LogLevel]
    INFO: _ClassVar[LogLevel]
    DEBUG: _ClassVar[LogLevel]
    TRACE: _ClassVar[LogLevel]
UNSPECIFIED: LogLevel
PANIC: LogLevel
FATAL: LogLevel
ERROR: LogLevel
WARN: LogLevel
INFO: LogLevel
DEBUG: LogLevel
TRACE: LogLevel

class SPIFFEID(_message.Message):
    __slots__ = ("trust_domain", "path")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    path: str
    def __init__(self, trust_domain: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SelectorMatch(_message.Message):
    __slots__ = ("selectors", "match")
    class MatchBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_EXACT: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_SUBSET: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_SUPERSET: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_ANY: _ClassVar[SelectorMatch.MatchBehavior]
    MATCH_EXACT: SelectorMatch.MatchBehavior
    MATCH_SUBSET: SelectorMatch.MatchBehavior
    MATCH_SUPERSET: SelectorMatch.MatchBehavior
    MATCH_ANY: SelectorMatch.MatchBehavior
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    match: SelectorMatch.MatchBehavior
    def __init__(self, selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., match: _Optional[_Union[SelectorMatch.MatchBehavior, str]] = ...) -> None: ...

class FederatesWithMatch(_message.Message):
    __slots__ = ("trust_domains", "match")
    class MatchBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_EXACT: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_SUBSET: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_SUPERSET: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_ANY: _ClassVar[FederatesWithMatch.MatchBehavior]
    MATCH_EXACT: FederatesWithMatch.MatchBehavior
    MATCH_SUBSET: FederatesWithMatch.MatchBehavior
    MATCH_SUPERSET: FederatesWithMatch.MatchBehavior
    MATCH_ANY: FederatesWithMatch.MatchBehavior
    TRUST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    trust_domains: _containers.RepeatedScalarFieldContainer[str]
    match: FederatesWithMatch.MatchBehavior
    def __init__(self, trust_domains: _Optional[_Iterable[str]] = ..., match: _Optional[_Union[FederatesWithMatch.MatchBehavior, str]] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("id", "attestation_type", "x509svid_serial_number", "x509svid_expires_at", "selectors", "banned", "can_reattest", "agent_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    X509SVID_SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    X509SVID_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: SPIFFEID
    attestation_type: str
    x509svid_serial_number: str
    x509svid_expires_at: int
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    banned: bool
    can_reattest: bool
    agent_version: str
    def __init__(self, id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., attestation_type: _Optional[str] = ..., x509svid_serial_number: _Optional[str] = ..., x509svid_expires_at: _Optional[int] = ..., selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., banned: _Optional[bool] = ..., can_reattest: _Optional[bool] = ..., agent_version: _Optional[str] = ...) -> None: ...

class AgentMask(_message.Message):
    __slots__ = ("attestation_type", "x509svid_serial_number", "x509svid_expires_at", "selectors", "banned", "can_reattest", "agent_version")
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    X509SVID_SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    X509SVID_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    attestation_type: bool
    x509svid_serial_number: bool
    x509svid_expires_at: bool
    selectors: bool
    banned: bool
    can_reattest: bool
    agent_version: bool
    def __init__(self, attestation_type: _Optional[bool] = ..., x509svid_serial_number: _Optional[bool] = ..., x509svid_expires_at: _Optional[bool] = ..., selectors: _Optional[bool] = ..., banned: _Optional[bool] = ..., can_reattest: _Optional[bool] = ..., agent_version: _Optional[bool] = ...) -> None: ...

class AttestationData(_message.Message):
    __slots__ = ("type", "payload")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    type: str
    payload: bytes
    def __init__(self, type: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ("value", "expires_at")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    value: str
    expires_at: int
    def __init__(self, value: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "federates_with", "admin", "downstream", "expires_at", "dns_names", "revision_number", "store_svid", "jwt_svid_ttl", "hint", "created_at", "additional_attributes")
    class AdditionalAttributes(_message.Message):
        __slots__ = ("disable_x509_svid_prefetch", "jwt_svid_include_jti")
        DISABLE_X509_SVID_PREFETCH_FIELD_NUMBER: _ClassVar[int]
        JWT_SVID_INCLUDE_JTI_FIELD_NUMBER: _ClassVar[int]
        disable_x509_svid_prefetch: bool
        jwt_svid_include_jti: bool
        def __init__(self, disable_x509_svid_prefetch: _Optional[bool] = ..., jwt_svid_include_jti: _Optional[bool] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STORE_SVID_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    spiffe_id: SPIFFEID
    parent_id: SPIFFEID
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    x509_svid_ttl: int
    federates_with: _containers.RepeatedScalarFieldContainer[str]
    admin: bool
    downstream: bool
    expires_at: int
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    revision_number: int
    store_svid: bool
    jwt_svid_ttl: int
    hint: str
    created_at: int
    additional_attributes: Entry.AdditionalAttributes
    def __init__(self, id: _Optional[str] = ..., spiffe_id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., parent_id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., x509_svid_ttl: _Optional[int] = ..., federates_with: _Optional[_Iterable[str]] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., expires_at: _Optional[int] = ..., dns_names: _Optional[_Iterable[str]] = ..., revision_number: _Optional[int] = ..., store_svid: _Optional[bool] = ..., jwt_svid_ttl: _Optional[int] = ..., hint: _Optional[str] = ..., created_at: _Optional[int] = ..., additional_attributes: _Optional[_Union[Entry.AdditionalAttributes, _Mapping]] = ...) -> None: ...

class EntryMask(_message.Message):
    __slots__ = ("spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "federates_with", "admin", "downstream", "expires_at", "dns_names", "revision_number", "store_svid", "jwt_svid_ttl", "hint", "created_at", "additional_attributes")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STORE_SVID_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: bool
    parent_id: bool
    selectors: bool
    x509_svid_ttl: bool
    federates_with: bool
    admin: bool
    downstream: bool
    expires_at: bool
    dns_names: bool
    revision_number: bool
    store_svid: bool
    jwt_svid_ttl: bool
    hint: bool
    created_at: bool
    additional_attributes: bool
    def __init__(self, spiffe_id: _Optional[bool] = ..., parent_id: _Optional[bool] = ..., selectors: _Optional[bool] = ..., x509_svid_ttl: _Optional[bool] = ..., federates_with: _Optional[bool] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., expires_at: _Optional[bool] = ..., dns_names: _Optional[bool] = ..., revision_number: _Optional[bool] = ..., store_svid: _Optional[bool] = ..., jwt_svid_ttl: _Optional[bool] = ..., hint: _Optional[bool] = ..., created_at: _Optional[bool] = ..., additional_attributes: _Optional[bool] = ...) -> None: ...

class X509SVID(_message.Message):
    __slots__ = ("cert_chain", "id", "expires_at", "hint")
    CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    cert_chain: _containers.RepeatedScalarFieldContainer[bytes]
    id: SPIFFEID
    expires_at: int
    hint: str
    def __init__(self, cert_chain: _Optional[_Iterable[bytes]] = ..., id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., expires_at: _Optional[int] = ..., hint: _Optional[str] = ...) -> None: ...

class JWTSVID(_message.Message):
    __slots__ = ("token", "id", "expires_at", "issued_at", "hint")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    token: str
    id: SPIFFEID
    expires_at: int
    issued_at: int
    hint: str
    def __init__(self, token: _Optional[str] = ..., id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., expires_at: _Optional[int] = ..., issued_at: _Optional[int] = ..., hint: _Optional[str] = ...) -> None: ...

class WITSVID(_message.Message):
    __slots__ = ("token", "id", "expires_at", "issued_at", "hint")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    token: str
    id: SPIFFEID
    expires_at: int
    issued_at: int
    hint: str
    def __init__(self, token: _Optional[str] = ..., id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., expires_at: _Optional[int] = ..., issued_at: _Optional[int] = ..., hint: _Optional[str] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("trust_domain", "x509_authorities", "jwt_authorities", "refresh_hint", "sequence_number", "wit_authorities")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    REFRESH_HINT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WIT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    x509_authorities: _containers.RepeatedCompositeFieldContainer[X509Certificate]
    jwt_authorities: _containers.RepeatedCompositeFieldContainer[JWTKey]
    refresh_hint: int
    sequence_number: int
    wit_authorities: _containers.RepeatedCompositeFieldContainer[WITKey]
    def __init__(self, trust_domain: _Optional[str] = ..., x509_authorities: _Optional[_Iterable[_Union[X509Certificate, _Mapping]]] = ..., jwt_authorities: _Optional[_Iterable[_Union[JWTKey, _Mapping]]] = ..., refresh_hint: _Optional[int] = ..., sequence_number: _Optional[int] = ..., wit_authorities: _Optional[_Iterable[_Union[WITKey, _Mapping]]] = ...) -> None: ...

class X509Certificate(_message.Message):
    __slots__ = ("asn1", "tainted")
    ASN1_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    asn1: bytes
    tainted: bool
    def __init__(self, asn1: _Optional[bytes] = ..., tainted: _Optional[bool] = ...) -> None: ...

class JWTKey(_message.Message):
    __slots__ = ("public_key", "key_id", "expires_at", "tainted")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    key_id: str
    expires_at: int
    tainted: bool
    def __init__(self, public_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...

class WITKey(_message.Message):
    __slots__ = ("public_key", "key_id", "expires_at", "tainted")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    key_id: str
    expires_at: int
    tainted: bool
    def __init__(self, public_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...

class BundleMask(_message.Message):
    __slots__ = ("x509_authorities", "jwt_authorities", "refresh_hint", "sequence_number", "wit_authorities")
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    REFRESH_HINT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WIT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    x509_authorities: bool
    jwt_authorities: bool
    refresh_hint: bool
    sequence_number: bool
    wit_authorities: bool
    def __init__(self, x509_authorities: _Optional[bool] = ..., jwt_authorities: _Optional[bool] = ..., refresh_hint: _Optional[bool] = ..., sequence_number: _Optional[bool] = ..., wit_authorities: _Optional[bool] = ...) -> None: ...

class FederationRelationship(_message.Message):
    __slots__ = ("trust_domain", "bundle_endpoint_url", "https_web", "https_spiffe", "trust_domain_bundle")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    HTTPS_WEB_FIELD_NUMBER: _ClassVar[int]
    HTTPS_SPIFFE_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    bundle_endpoint_url: str
    https_web: HTTPSWebProfile
    https_spiffe: HTTPSSPIFFEProfile
    trust_domain_bundle: Bundle
    def __init__(self, trust_domain: _Optional[str] = ..., bundle_endpoint_url: _Optional[str] = ..., https_web: _Optional[_Union[HTTPSWebProfile, _Mapping]] = ..., https_spiffe: _Optional[_Union[HTTPSSPIFFEProfile, _Mapping]] = ..., trust_domain_bundle: _Optional[_Union[Bundle, _Mapping]] = ...) -> None: ...

class HTTPSWebProfile(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HTTPSSPIFFEProfile(_message.Message):
    __slots__ = ("endpoint_spiffe_id",)
    ENDPOINT_SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint_spiffe_id: str
    def __init__(self, endpoint_spiffe_id: _Optional[str] = ...) -> None: ...

class FederationRelationshipMask(_message.Message):
    __slots__ = ("bundle_endpoint_url", "bundle_endpoint_profile", "trust_domain_bundle")
    BUNDLE_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle_endpoint_url: bool
    bundle_endpoint_profile: bool
    trust_domain_bundle: bool
    def __init__(self, bundle_endpoint_url: _Optional[bool] = ..., bundle_endpoint_profile: _Optional[bool] = ..., trust_domain_bundle: _Optional[bool] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PermissionDeniedDetails(_message.Message):
    __slots__ = ("reason",)
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_EXPIRED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_NOT_ATTESTED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_NOT_ACTIVE: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_BANNED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_MUST_REATTEST: _ClassVar[PermissionDeniedDetails.Reason]
    UNKNOWN: PermissionDeniedDetails.Reason
    AGENT_EXPIRED: PermissionDeniedDetails.Reason
    AGENT_NOT_ATTESTED: PermissionDeniedDetails.Reason
    AGENT_NOT_ACTIVE: PermissionDeniedDetails.Reason
    AGENT_BANNED: PermissionDeniedDetails.Reason
    AGENT_MUST_REATTEST: PermissionDeniedDetails.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: PermissionDeniedDetails.Reason
    def __init__(self, reason: _Optional[_Union[PermissionDeniedDetails.Reason, str]] = ...) -> None: ...

class Logger(_message.Message):
    __slots__ = ("current_level", "launch_level")
    CURRENT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    current_level: LogLevel
    launch_level: LogLevel
    def __init__(self, current_level: _Optional[_Union[LogLevel, str]] = ..., launch_level: _Optional[_Union[LogLevel, str]] = ...) -> None: ...
