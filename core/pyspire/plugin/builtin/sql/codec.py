"""Rows <-> records for the ``sql`` DataStore: the one place that knows the column formats."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyspire.plugin.builtin.sql.schema import attested_nodes, registered_entries
from pyspire.plugin.records import (
    AttestedNode,
    BundleRecord,
    FederationRelationship,
    JwtAuthority,
    RegistrationEntry,
    X509Authority,
)
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId, TrustDomain

__all__ = [
    "ENTRY_COLUMNS",
    "NODE_COLUMNS",
    "bundle_from_data",
    "bundle_to_data",
    "digest",
    "entry_from_row",
    "entry_identity",
    "entry_row",
    "node_from_row",
    "node_row",
    "relationship_from_row",
    "relationship_row",
    "selector_digest",
]


def digest(text: str) -> str:
    """The indexed stand-in for a long string: hex SHA-256 of its UTF-8."""
    return hashlib.sha256(text.encode()).hexdigest()


def selector_digest(selector: Selector) -> str:
    """The indexed form of one selector."""
    return digest(f"{selector.type}:{selector.value}")


def _selectors_json(selectors: Iterable[Selector]) -> str:
    return json.dumps([[s.type, s.value] for s in selectors], separators=(",", ":"))


@functools.lru_cache(maxsize=65536)
def _selectors(text: str) -> tuple[Selector, ...]:
    # The same selector sets recur across a fleet (one workload's selectors under every agent
    # that runs it): a cold start of 100,000 entries decoded each set anew, and kept a copy of
    # each. Selectors are immutable, so the entries that share a set share one tuple.
    return tuple(Selector(kind, value) for kind, value in json.loads(text))


def entry_identity(entry: RegistrationEntry) -> str:
    """What makes two entries the same entry: SPIFFE ID, parent ID and selector set."""
    selectors = sorted({f"{s.type}:{s.value}" for s in entry.selectors})
    return digest("\n".join([str(entry.spiffe_id), str(entry.parent_id), *selectors]))


def entry_row(entry: RegistrationEntry) -> dict[str, Any]:
    """The registered_entries row of a (normalized) entry."""
    return {
        "id": entry.id,
        "spiffe_id": str(entry.spiffe_id),
        "spiffe_id_hash": digest(str(entry.spiffe_id)),
        "parent_id": str(entry.parent_id),
        "parent_id_hash": digest(str(entry.parent_id)),
        "identity_hash": entry_identity(entry),
        "selectors": _selectors_json(entry.selectors),
        "dns_names": json.dumps(list(entry.dns_names)),
        "federates_with": json.dumps([td.name for td in entry.federates_with]),
        "x509_svid_ttl": entry.x509_svid_ttl,
        "jwt_svid_ttl": entry.jwt_svid_ttl,
        "admin": entry.admin,
        "downstream": entry.downstream,
        "expires_at": entry.expires_at,
        "revision_number": entry.revision_number,
        "store_svid": entry.store_svid,
        "hint": entry.hint,
        "created_at": entry.created_at,
        "disable_x509_svid_prefetch": entry.disable_x509_svid_prefetch,
        "jwt_svid_include_jti": entry.jwt_svid_include_jti,
    }


@functools.lru_cache(maxsize=65536)
def _parent_id(text: str) -> SpiffeId:
    # Parent IDs repeat (one per agent or alias, shared by its entries): parse each once per
    # load. The IDs are still parsed strictly; only the repetition is skipped.
    return SpiffeId.parse(text)


def _json_list(text: str) -> list[Any]:
    # Most entries have no DNS names and no federation: skip the JSON parser for "[]".
    return [] if text == "[]" else list(json.loads(text))


# The registered_entries columns an entry is read from, in the order entry_from_row takes
# them. Reads select these alone, not the index hashes beside them, and unpack each row by
# position: a cold start decodes every entry of the server, and reading each value by column
# name through SQLAlchemy's mapping view cost more than building the entry.
ENTRY_COLUMNS = tuple(
    registered_entries.c[name]
    for name in (
        "id",
        "spiffe_id",
        "parent_id",
        "selectors",
        "x509_svid_ttl",
        "jwt_svid_ttl",
        "federates_with",
        "admin",
        "downstream",
        "expires_at",
        "dns_names",
        "revision_number",
        "store_svid",
        "hint",
        "created_at",
        "disable_x509_svid_prefetch",
        "jwt_svid_include_jti",
    )
)


def entry_from_row(row: Sequence[Any]) -> RegistrationEntry:
    """The entry a row of the :data:`ENTRY_COLUMNS` of registered_entries holds."""
    (
        entry_id,
        spiffe_id,
        parent_id,
        selectors,
        x509_svid_ttl,
        jwt_svid_ttl,
        federates_with,
        admin,
        downstream,
        expires_at,
        dns_names,
        revision_number,
        store_svid,
        hint,
        created_at,
        disable_x509_svid_prefetch,
        jwt_svid_include_jti,
    ) = row
    return RegistrationEntry(
        id=entry_id,
        spiffe_id=SpiffeId.parse(spiffe_id),
        parent_id=_parent_id(parent_id),
        selectors=_selectors(selectors),
        x509_svid_ttl=x509_svid_ttl,
        jwt_svid_ttl=jwt_svid_ttl,
        federates_with=tuple(TrustDomain.parse(name) for name in _json_list(federates_with)),
        admin=bool(admin),
        downstream=bool(downstream),
        expires_at=expires_at,
        dns_names=tuple(_json_list(dns_names)),
        revision_number=revision_number,
        store_svid=bool(store_svid),
        hint=hint,
        created_at=created_at,
        disable_x509_svid_prefetch=bool(disable_x509_svid_prefetch),
        jwt_svid_include_jti=bool(jwt_svid_include_jti),
    )


def node_row(node: AttestedNode) -> dict[str, Any]:
    """The attested_nodes row of a node."""
    return {
        "spiffe_id_hash": digest(str(node.spiffe_id)),
        "spiffe_id": str(node.spiffe_id),
        "attestation_type": node.attestation_type,
        "cert_serial_number": node.cert_serial_number,
        "cert_not_after": node.cert_not_after,
        "new_cert_serial_number": node.new_cert_serial_number,
        "new_cert_not_after": node.new_cert_not_after,
        "can_reattest": node.can_reattest,
        "agent_version": node.agent_version,
        "selectors": _selectors_json(sorted(set(node.selectors))),
    }


# The attested_nodes columns a node is read from, in the order node_from_row takes them.
NODE_COLUMNS = tuple(
    attested_nodes.c[name]
    for name in (
        "spiffe_id",
        "attestation_type",
        "cert_serial_number",
        "cert_not_after",
        "new_cert_serial_number",
        "new_cert_not_after",
        "can_reattest",
        "agent_version",
        "selectors",
    )
)


def node_from_row(row: Sequence[Any]) -> AttestedNode:
    """The node a row of the :data:`NODE_COLUMNS` of attested_nodes holds."""
    (
        spiffe_id,
        attestation_type,
        cert_serial_number,
        cert_not_after,
        new_cert_serial_number,
        new_cert_not_after,
        can_reattest,
        agent_version,
        selectors,
    ) = row
    return AttestedNode(
        spiffe_id=SpiffeId.parse(spiffe_id),
        attestation_type=attestation_type,
        cert_serial_number=cert_serial_number,
        cert_not_after=cert_not_after,
        new_cert_serial_number=new_cert_serial_number,
        new_cert_not_after=new_cert_not_after,
        can_reattest=bool(can_reattest),
        agent_version=agent_version,
        selectors=_selectors(selectors),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bundle_to_data(bundle: BundleRecord) -> str:
    """The JSON the bundles table stores for a bundle."""
    return json.dumps(
        {
            "x509": [{"der": _b64(a.der), "tainted": a.tainted} for a in bundle.x509_authorities],
            "jwt": [
                {"kid": k.key_id, "key": _b64(k.public_key_der), "expires_at": k.expires_at, "tainted": k.tainted}
                for k in bundle.jwt_authorities
            ],
            "refresh_hint": bundle.refresh_hint,
            "sequence_number": bundle.sequence_number,
        },
        separators=(",", ":"),
    )


def bundle_from_data(trust_domain: str, data: str) -> BundleRecord:
    """The bundle a bundles row holds."""
    document = json.loads(data)
    return BundleRecord(
        trust_domain=TrustDomain.parse(trust_domain),
        x509_authorities=tuple(X509Authority(base64.b64decode(a["der"]), bool(a["tainted"])) for a in document["x509"]),
        jwt_authorities=tuple(
            JwtAuthority(k["kid"], base64.b64decode(k["key"]), int(k["expires_at"]), bool(k["tainted"]))
            for k in document["jwt"]
        ),
        refresh_hint=int(document["refresh_hint"]),
        sequence_number=int(document["sequence_number"]),
    )


def relationship_row(relationship: FederationRelationship) -> dict[str, Any]:
    """The federation_relationships row of a relationship."""
    return {
        "trust_domain": relationship.trust_domain.name,
        "bundle_endpoint_url": relationship.bundle_endpoint_url,
        "profile": relationship.profile,
        "endpoint_spiffe_id": str(relationship.endpoint_spiffe_id or ""),
    }


def relationship_from_row(row: Mapping[Any, Any]) -> FederationRelationship:
    """The relationship a federation_relationships row holds."""
    endpoint = row["endpoint_spiffe_id"]
    return FederationRelationship(
        trust_domain=TrustDomain.parse(row["trust_domain"]),
        bundle_endpoint_url=row["bundle_endpoint_url"],
        profile=row["profile"],
        endpoint_spiffe_id=SpiffeId.parse(endpoint) if endpoint else None,
    )
