"""The tables of the ``sql`` DataStore (SQLAlchemy Core), for SQLite, PostgreSQL and MySQL.

Long identifiers (SPIFFE IDs can have 2048 bytes) are stored in full but looked up through a
SHA-256 of their text in an indexed fixed-size column, because MySQL cannot index long
strings. Each entry's and node's selectors, DNS names and federated trust domains live as
JSON in their own row (one read loads a record) and, for the filters that need them, in
small index tables kept in the same transaction.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

_LONG_TEXT = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")
_HASH = String(64)  # hex SHA-256
_ID = String(2048)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
"""Named counters; ``change_sequence`` numbers change events in commit order."""

change_events = Table(
    "change_events",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("record_key", _ID, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_change_events_created_at", "created_at"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("trust_domain", String(255), primary_key=True),
    Column("data", _LONG_TEXT, nullable=False),
)

registered_entries = Table(
    "registered_entries",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("spiffe_id", _ID, nullable=False),
    Column("spiffe_id_hash", _HASH, nullable=False),
    Column("parent_id", _ID, nullable=False),
    Column("parent_id_hash", _HASH, nullable=False),
    Column("identity_hash", _HASH, nullable=False, unique=True),
    Column("selectors", _LONG_TEXT, nullable=False),
    Column("dns_names", Text, nullable=False),
    Column("federates_with", Text, nullable=False),
    Column("x509_svid_ttl", Integer, nullable=False),
    Column("jwt_svid_ttl", Integer, nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("downstream", Boolean, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revision_number", BigInteger, nullable=False),
    Column("store_svid", Boolean, nullable=False),
    Column("hint", String(1024), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("disable_x509_svid_prefetch", Boolean, nullable=False),
    Column("jwt_svid_include_jti", Boolean, nullable=False),
    Index("ix_registered_entries_spiffe_id_hash", "spiffe_id_hash"),
    Index("ix_registered_entries_parent_id_hash", "parent_id_hash"),
    Index("ix_registered_entries_expires_at", "expires_at"),
)
"""``identity_hash``: SHA-256 of SPIFFE ID, parent ID and sorted selectors (uniqueness)."""

entry_selectors = Table(
    "entry_selectors",
    metadata,
    Column("entry_id", String(255), ForeignKey("registered_entries.id", ondelete="CASCADE"), nullable=False),
    Column("selector_hash", _HASH, nullable=False),
    Index("ix_entry_selectors_hash", "selector_hash"),
    Index("ix_entry_selectors_entry", "entry_id"),
)

entry_federates_with = Table(
    "entry_federates_with",
    metadata,
    Column("entry_id", String(255), ForeignKey("registered_entries.id", ondelete="CASCADE"), nullable=False),
    Column("trust_domain", String(255), nullable=False),
    Index("ix_entry_federates_with_td", "trust_domain"),
    Index("ix_entry_federates_with_entry", "entry_id"),
)

attested_nodes = Table(
    "attested_nodes",
    metadata,
    Column("spiffe_id_hash", _HASH, primary_key=True),
    Column("spiffe_id", _ID, nullable=False),
    Column("attestation_type", String(255), nullable=False),
    Column("cert_serial_number", String(255), nullable=False),
    Column("cert_not_after", BigInteger, nullable=False),
    Column("new_cert_serial_number", String(255), nullable=False),
    Column("new_cert_not_after", BigInteger, nullable=False),
    Column("can_reattest", Boolean, nullable=False),
    Column("agent_version", String(255), nullable=False),
    Column("selectors", _LONG_TEXT, nullable=False),
    Index("ix_attested_nodes_spiffe_id", "spiffe_id", mysql_length=255),
    Index("ix_attested_nodes_type", "attestation_type"),
)

node_selectors = Table(
    "node_selectors",
    metadata,
    Column("node_hash", _HASH, ForeignKey("attested_nodes.spiffe_id_hash", ondelete="CASCADE"), nullable=False),
    Column("selector_hash", _HASH, nullable=False),
    Index("ix_node_selectors_hash", "selector_hash"),
    Index("ix_node_selectors_node", "node_hash"),
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("token", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

federation_relationships = Table(
    "federation_relationships",
    metadata,
    Column("trust_domain", String(255), primary_key=True),
    Column("bundle_endpoint_url", String(2048), nullable=False),
    Column("profile", String(32), nullable=False),
    Column("endpoint_spiffe_id", String(2048), nullable=False),
)

ca_journals = Table(
    "ca_journals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("active_x509_authority_id", String(255), nullable=False),
    Column("data", LargeBinary(length=16 * 1024 * 1024), nullable=False),
    Index("ix_ca_journals_authority", "active_x509_authority_id"),
)
