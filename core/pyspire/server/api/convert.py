"""API messages <-> datastore records, validating everything that comes in.

Each conversion from a request raises :class:`InvalidInput` naming the field and the rule,
e.g. ``invalid spiffe ID: "spiffe://example.org/spire/x" is not a workload in trust domain
"example.org"; path is in the reserved namespace`` (SPIRE's wording, so operators recognise it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from pyspire.plugin.records import (
    AttestedNode,
    BundleRecord,
    FederationRelationship,
    JwtAuthority,
    MatchBehavior,
    RegistrationEntry,
    X509Authority,
)
from pyspire.plugin.selectors import Selector
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import BundleError, SpiffeId, SpiffeIdError, TrustDomain
from pyspire.spiffe.bundle import public_key_to_jwk, refresh_hint_from_seconds
from pyspire.spiffe.pem import der_certificate
from pyspire.spire_ids import is_agent_id, is_reserved

__all__ = [
    "InvalidInput",
    "agent_to_proto",
    "bundle_from_proto",
    "bundle_to_proto",
    "entry_from_proto",
    "entry_to_proto",
    "id_from_proto",
    "id_to_proto",
    "selectors_from_proto",
    "x509_svid_to_proto",
]

HINT_MAX_LENGTH = 1024
TTL_MAX_SECONDS = 2**31 - 1
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class InvalidInput(ValueError):
    """A request field breaks a rule; the message names the field.

    ``reason`` is the rule alone, without the field's name (SPIRE's filter errors name the
    filter instead).
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class InvalidRecord(InvalidInput):
    """An entry SPIRE's datastore refuses rather than its API (its messages say so)."""


def id_to_proto(spiffe_id: SpiffeId) -> types_pb2.SPIFFEID:
    """A SPIFFE ID as the API carries it."""
    return types_pb2.SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def id_from_proto(proto: types_pb2.SPIFFEID | None, what: str = "SPIFFE ID") -> SpiffeId:
    """Parse an API SPIFFE ID strictly."""
    if proto is None:
        raise InvalidInput(f"invalid {what}: request must specify SPIFFE ID", "request must specify SPIFFE ID")
    try:
        trust_domain = TrustDomain.parse(proto.trust_domain)
        return SpiffeId.from_path(trust_domain, proto.path)
    except SpiffeIdError as err:
        raise InvalidInput(f"invalid {what}: {err.reason}", err.reason) from None


def _member(spiffe_id: SpiffeId, trust_domain: TrustDomain, what: str, kind: str = "a member of") -> None:
    if not spiffe_id.member_of(trust_domain):
        reason = f'"{spiffe_id}" is not a member of trust domain "{trust_domain}"'
        raise InvalidInput(f"invalid {what}: {reason}", reason)
    if not spiffe_id.path:
        reason = f'"{spiffe_id}" is not {kind} trust domain "{trust_domain}"; path is empty'
        raise InvalidInput(f"invalid {what}: {reason}", reason)


def workload_id_from_proto(
    proto: types_pb2.SPIFFEID | None, trust_domain: TrustDomain, what: str = "spiffe ID"
) -> SpiffeId:
    """A workload's SPIFFE ID: in the trust domain, with a path outside ``/spire/``."""
    spiffe_id = id_from_proto(proto, what)
    _member(spiffe_id, trust_domain, what, "a workload in")
    if is_reserved(spiffe_id):
        reason = f'"{spiffe_id}" is not a workload in trust domain "{trust_domain}"; path is in the reserved namespace'
        raise InvalidInput(f"invalid {what}: {reason}", reason)
    return spiffe_id


def member_id_from_proto(proto: types_pb2.SPIFFEID | None, trust_domain: TrustDomain, what: str) -> SpiffeId:
    """Any non-root SPIFFE ID of the trust domain (parent IDs may be agents or the server)."""
    spiffe_id = id_from_proto(proto, what)
    _member(spiffe_id, trust_domain, what)
    return spiffe_id


def agent_id_from_proto(proto: types_pb2.SPIFFEID | None, trust_domain: TrustDomain) -> SpiffeId:
    """An agent's SPIFFE ID: in the trust domain, under ``/spire/agent/``."""
    spiffe_id = id_from_proto(proto, "agent ID")
    _member(spiffe_id, trust_domain, "agent ID", "an agent in")
    if not is_agent_id(spiffe_id, trust_domain):
        raise InvalidInput(
            f'invalid agent ID: "{spiffe_id}" is not an agent in trust domain "{trust_domain}"; '
            "path is not in the agent namespace"
        )
    return spiffe_id


def selectors_from_proto(selectors: Iterable[types_pb2.Selector]) -> tuple[Selector, ...]:
    """Selectors with SPIRE's checks: a type without ':', a non-empty value."""
    found = []
    for selector in selectors:
        if not selector.type:
            raise InvalidInput("missing selector type")
        if ":" in selector.type:
            raise InvalidInput("selector type contains ':'")
        if not selector.value:
            raise InvalidInput("missing selector value")
        found.append(Selector(selector.type, selector.value))
    return tuple(found)


def match_from_proto(value: int) -> MatchBehavior:
    """A MatchBehavior from its API number."""
    try:
        return MatchBehavior(value)
    except ValueError:
        raise InvalidInput(f"invalid match behavior {value}") from None


def validate_dns_name(name: str) -> str:
    """A DNS SAN: RFC 1123 labels, a wildcard only as the whole left-most label."""
    if not name or len(name) > 253:
        raise InvalidInput(f'invalid DNS name "{name}": empty or longer than 253 characters')
    labels = name.split(".")
    for position, label in enumerate(labels):
        if label == "*" and position == 0 and len(labels) > 2:
            continue
        if not _DNS_LABEL.fullmatch(label):
            raise InvalidInput(f'invalid DNS name "{name}": label "{label}" is not a valid DNS label')
    return name


def _ttl(value: int, what: str, name: str) -> int:
    if value < 0:
        raise InvalidRecord(f"datastore-validation: invalid registration entry: {name} is not set")
    if value > TTL_MAX_SECONDS:
        raise InvalidInput(f"invalid {what}: {value} is out of range (0 means the server default)")
    return value


def entry_from_proto(proto: types_pb2.Entry, trust_domain: TrustDomain) -> RegistrationEntry:
    """A registration entry from a request, validated as SPIRE validates it."""
    parent_id = member_id_from_proto(
        proto.parent_id if proto.HasField("parent_id") else None, trust_domain, "parent ID"
    )
    spiffe_id = workload_id_from_proto(proto.spiffe_id if proto.HasField("spiffe_id") else None, trust_domain)
    if not proto.selectors:
        raise InvalidInput("selector list is empty")
    federates: list[TrustDomain] = []
    for name in proto.federates_with:
        try:
            federates.append(TrustDomain.parse(name))
        except SpiffeIdError as err:
            raise InvalidInput(f"invalid federated trust domain: {err.reason}") from None
    if len(proto.hint) > HINT_MAX_LENGTH:
        raise InvalidInput(f"hint is too long, max length is {HINT_MAX_LENGTH} characters")
    if proto.expires_at < 0:
        raise InvalidInput(f"invalid expires_at: {proto.expires_at} is negative")
    selectors = selectors_from_proto(proto.selectors)
    dns_names = tuple(validate_dns_name(name) for name in proto.dns_names)
    attributes = proto.additional_attributes if proto.HasField("additional_attributes") else None
    return RegistrationEntry(
        id=proto.id,
        spiffe_id=spiffe_id,
        parent_id=parent_id,
        selectors=selectors,
        x509_svid_ttl=_ttl(proto.x509_svid_ttl, "x509_svid_ttl", "X509SvidTtl"),
        jwt_svid_ttl=_ttl(proto.jwt_svid_ttl, "jwt_svid_ttl", "JwtSvidTtl"),
        federates_with=tuple(federates),
        admin=proto.admin,
        downstream=proto.downstream,
        expires_at=proto.expires_at,
        dns_names=dns_names,
        store_svid=proto.store_svid,
        hint=proto.hint,
        disable_x509_svid_prefetch=bool(attributes and attributes.disable_x509_svid_prefetch),
        jwt_svid_include_jti=bool(attributes and attributes.jwt_svid_include_jti),
    ).normalized()


_REPEATED_FIELDS = frozenset({"selectors", "federates_with", "dns_names"})
_MESSAGE_FIELDS = frozenset({"spiffe_id", "parent_id", "additional_attributes"})
_MASKED_FIELDS = (
    "spiffe_id",
    "parent_id",
    "selectors",
    "x509_svid_ttl",
    "federates_with",
    "admin",
    "downstream",
    "expires_at",
    "dns_names",
    "store_svid",
    "jwt_svid_ttl",
    "hint",
    "additional_attributes",
)


def entry_update_from_proto(
    existing: RegistrationEntry, proto: types_pb2.Entry, mask: types_pb2.EntryMask | None, trust_domain: TrustDomain
) -> RegistrationEntry:
    """``existing`` with the fields ``mask`` names taken from ``proto`` (all fields without a mask)."""
    merged = _full_entry(existing)
    for field in _MASKED_FIELDS:
        if mask is not None and not getattr(mask, field):
            continue
        if field in _REPEATED_FIELDS:
            del getattr(merged, field)[:]
            getattr(merged, field).extend(getattr(proto, field))
        elif field in _MESSAGE_FIELDS:
            merged.ClearField(field)
            if proto.HasField(field):
                getattr(merged, field).CopyFrom(getattr(proto, field))
        else:
            setattr(merged, field, getattr(proto, field))
    entry = entry_from_proto(merged, trust_domain)
    return replace(entry, id=existing.id, revision_number=existing.revision_number, created_at=existing.created_at)


def entry_to_proto(entry: RegistrationEntry, mask: types_pb2.EntryMask | None = None) -> types_pb2.Entry:
    """An entry as the API returns it; with ``mask`` only the masked fields are set."""
    if mask is None:
        return _full_entry(entry)
    out = types_pb2.Entry(id=entry.id)
    full = _full_entry(entry)
    for field in ("spiffe_id", "parent_id", "additional_attributes"):
        if getattr(mask, field):
            getattr(out, field).CopyFrom(getattr(full, field))
    for field in ("selectors", "federates_with", "dns_names"):
        if getattr(mask, field):
            getattr(out, field).extend(getattr(full, field))
    for field in (
        "x509_svid_ttl",
        "jwt_svid_ttl",
        "admin",
        "downstream",
        "expires_at",
        "revision_number",
        "store_svid",
        "hint",
        "created_at",
    ):
        if getattr(mask, field):
            setattr(out, field, getattr(full, field))
    return out


def _full_entry(entry: RegistrationEntry) -> types_pb2.Entry:
    out = types_pb2.Entry(
        id=entry.id,
        spiffe_id=id_to_proto(entry.spiffe_id),
        parent_id=id_to_proto(entry.parent_id),
        selectors=[types_pb2.Selector(type=s.type, value=s.value) for s in entry.selectors],
        x509_svid_ttl=entry.x509_svid_ttl,
        jwt_svid_ttl=entry.jwt_svid_ttl,
        federates_with=[td.name for td in entry.federates_with],
        admin=entry.admin,
        downstream=entry.downstream,
        expires_at=entry.expires_at,
        dns_names=list(entry.dns_names),
        revision_number=entry.revision_number,
        store_svid=entry.store_svid,
        hint=entry.hint,
        created_at=entry.created_at,
    )
    if entry.disable_x509_svid_prefetch or entry.jwt_svid_include_jti:
        out.additional_attributes.CopyFrom(
            types_pb2.Entry.AdditionalAttributes(
                disable_x509_svid_prefetch=entry.disable_x509_svid_prefetch,
                jwt_svid_include_jti=entry.jwt_svid_include_jti,
            )
        )
    return out


def agent_to_proto(node: AttestedNode, mask: types_pb2.AgentMask | None = None) -> types_pb2.Agent:
    """An attested node as the API's Agent; with ``mask`` only the masked fields are set."""
    full = types_pb2.Agent(
        id=id_to_proto(node.spiffe_id),
        attestation_type=node.attestation_type,
        x509svid_serial_number=node.cert_serial_number,
        x509svid_expires_at=node.cert_not_after,
        selectors=[types_pb2.Selector(type=s.type, value=s.value) for s in node.selectors],
        banned=node.banned,
        can_reattest=node.can_reattest,
        agent_version=node.agent_version,
    )
    if mask is None:
        return full
    out = types_pb2.Agent(id=full.id)
    for field in (
        "attestation_type",
        "x509svid_serial_number",
        "x509svid_expires_at",
        "banned",
        "can_reattest",
        "agent_version",
    ):
        if getattr(mask, field):
            setattr(out, field, getattr(full, field))
    if mask.selectors:
        out.selectors.extend(full.selectors)
    return out


def bundle_to_proto(bundle: BundleRecord, mask: types_pb2.BundleMask | None = None) -> types_pb2.Bundle:
    """A bundle record as the API's Bundle."""
    out = types_pb2.Bundle(trust_domain=bundle.trust_domain.name)
    if mask is None or mask.x509_authorities:
        out.x509_authorities.extend(
            types_pb2.X509Certificate(asn1=a.der, tainted=a.tainted) for a in bundle.x509_authorities
        )
    if mask is None or mask.jwt_authorities:
        out.jwt_authorities.extend(
            types_pb2.JWTKey(public_key=k.public_key_der, key_id=k.key_id, expires_at=k.expires_at, tainted=k.tainted)
            for k in bundle.jwt_authorities
        )
    if mask is None or mask.refresh_hint:
        out.refresh_hint = bundle.refresh_hint
    if mask is None or mask.sequence_number:
        out.sequence_number = bundle.sequence_number
    return out


def bundle_from_proto(proto: types_pb2.Bundle) -> BundleRecord:
    """A bundle record from a request: a valid trust domain, parseable certificates and keys."""
    try:
        trust_domain = TrustDomain.parse(proto.trust_domain)
    except SpiffeIdError as err:
        raise InvalidInput(f"invalid trust domain: {err}") from None
    refresh_hint = max(proto.refresh_hint, 0)
    try:
        refresh_hint_from_seconds(refresh_hint)  # one the bundle endpoint and refresher can turn into a duration
    except BundleError as err:
        raise InvalidInput(f"invalid refresh hint: {err}") from None
    return BundleRecord(
        trust_domain,
        x509_authorities_from_proto(proto.x509_authorities),
        jwt_authorities_from_proto(proto.jwt_authorities),
        refresh_hint=refresh_hint,
        sequence_number=proto.sequence_number,
    )


def x509_authorities_from_proto(certificates: Iterable[types_pb2.X509Certificate]) -> tuple[X509Authority, ...]:
    """X.509 authorities from a request; each must be a DER certificate."""
    found = []
    for certificate in certificates:
        try:
            # Parseable, and with a key a SPIFFE bundle (JWK x5c) can carry: it is served as one.
            public_key_to_jwk(der_certificate(certificate.asn1).public_key())
        except ValueError as err:  # BundleError included
            raise InvalidInput(f"unable to parse X.509 authority: {err}", str(err)) from None
        found.append(X509Authority(certificate.asn1, certificate.tainted))
    return tuple(found)


def jwt_authorities_from_proto(keys: Iterable[types_pb2.JWTKey]) -> tuple[JwtAuthority, ...]:
    """JWT authorities from a request; each needs a key ID and a parseable public key."""
    found = []
    for key in keys:
        if not key.key_id:
            raise InvalidInput("unable to parse JWT authority: missing key ID", "missing key ID")
        try:
            public_key_to_jwk(serialization.load_der_public_key(key.public_key))
        except (ValueError, UnsupportedAlgorithm) as err:  # BundleError included
            raise InvalidInput(f"unable to parse JWT authority: {err}", str(err)) from None
        found.append(JwtAuthority(key.key_id, key.public_key, key.expires_at, key.tainted))
    return tuple(found)


def x509_svid_to_proto(chain: Sequence[x509.Certificate], spiffe_id: SpiffeId, hint: str = "") -> types_pb2.X509SVID:
    """An X509-SVID as the API returns it."""
    return types_pb2.X509SVID(
        cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
        id=id_to_proto(spiffe_id),
        expires_at=int(chain[0].not_valid_after_utc.timestamp()),
        hint=hint,
    )


def relationship_to_proto(
    relationship: FederationRelationship,
    bundle: BundleRecord | None,
    mask: types_pb2.FederationRelationshipMask | None = None,
) -> types_pb2.FederationRelationship:
    """A federation relationship as the API returns it: its trust domain and what ``mask`` asks for (all: no mask)."""
    out = types_pb2.FederationRelationship(trust_domain=relationship.trust_domain.name)
    if mask is None or mask.bundle_endpoint_url:
        out.bundle_endpoint_url = relationship.bundle_endpoint_url
    if mask is None or mask.bundle_endpoint_profile:
        if relationship.profile == "https_spiffe":
            out.https_spiffe.CopyFrom(
                types_pb2.HTTPSSPIFFEProfile(endpoint_spiffe_id=str(relationship.endpoint_spiffe_id or ""))
            )
        else:
            out.https_web.CopyFrom(types_pb2.HTTPSWebProfile())
    if bundle is not None and (mask is None or mask.trust_domain_bundle):
        out.trust_domain_bundle.CopyFrom(bundle_to_proto(bundle))
    return out


def relationship_from_proto(proto: types_pb2.FederationRelationship) -> FederationRelationship:
    """A federation relationship from a request."""
    try:
        trust_domain = TrustDomain.parse(proto.trust_domain)
    except SpiffeIdError as err:
        raise InvalidInput(f"failed to parse trust domain: {err.reason}") from None
    if not proto.bundle_endpoint_url.startswith("https://"):
        raise InvalidInput("bundle endpoint URL must use the https scheme")
    profile = proto.WhichOneof("bundle_endpoint_profile")
    if profile == "https_spiffe":
        try:
            endpoint_id = SpiffeId.parse(proto.https_spiffe.endpoint_spiffe_id)
        except SpiffeIdError as err:
            raise InvalidInput(f"failed to parse endpoint SPIFFE ID: {err.reason}") from None
        return FederationRelationship(trust_domain, proto.bundle_endpoint_url, "https_spiffe", endpoint_id)
    if profile == "https_web":
        return FederationRelationship(trust_domain, proto.bundle_endpoint_url, "https_web")
    # SPIRE's words (Go's name for the missing profile); https_web or https_spiffe is required.
    raise InvalidInput("unsupported bundle endpoint profile type: <nil>")
