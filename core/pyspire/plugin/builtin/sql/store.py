"""The built-in DataStore ``sql``: SQLite (embedded default), PostgreSQL, MySQL/MariaDB.

Every writing hook runs in one transaction that also appends its change events and bumps
the ``change_sequence`` counter as its last statement. The counter row stays locked until
commit, so writers get sequence numbers in commit order and a reader that has seen event
``n`` never sees a smaller one appear later (the hookspec's promise). Read-modify-write
hooks lock the row they read (``SELECT ... FOR UPDATE``; on SQLite every write transaction
starts with ``BEGIN IMMEDIATE``), so two servers updating one bundle both land.

Deadlocks and serialization failures are retried; an unreachable database becomes
:class:`~pyspire.plugin.Unavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, delete, func, insert, inspect, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from pyspire.plugin.builtin.sql import codec
from pyspire.plugin.builtin.sql.connection import (
    SqlConfig,
    check_connection_settings,
    make_engine,
    postgres_dsn,
    sqlite_path,
)
from pyspire.plugin.builtin.sql.ownership import refuse_foreign_tables
from pyspire.plugin.builtin.sql.reads_at_once import SqliteReadsAtOnce
from pyspire.plugin.builtin.sql.schema import (
    attested_nodes,
    bundles,
    ca_journals,
    change_events,
    counters,
    entry_federates_with,
    entry_selectors,
    federation_relationships,
    join_tokens,
    node_selectors,
    registered_entries,
)
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import AlreadyExists, FailedPrecondition, Internal, NotFound, Unavailable
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.plugin.records import (
    AttestedNode,
    BundleDeleteMode,
    BundleRecord,
    CaJournal,
    ChangeEvent,
    ChangeKind,
    CreatedEntry,
    EntryFilter,
    FederationRelationship,
    JoinToken,
    MatchBehavior,
    NodeFilter,
    NodeReadAtOnce,
    Page,
    RegistrationEntry,
)
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId, TrustDomain

if TYPE_CHECKING:
    from pyspire.plugin.builtin.sql.postgres_reads import PostgresNodeReads

__all__ = ["SqlDataStore"]

_log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_REVISION = "0001"
"""The newest revision under migrations/versions (a test holds the two equal). A database already
at it is opened without importing Alembic, which is a sixth of a server's start-up."""
_CHUNK = 500
_RETRIES = 5
T = TypeVar("T")
Events = list[tuple[ChangeKind, str]]

# Database error codes that mean "try the transaction again".
_RETRYABLE_PG = {"40001", "40P01"}  # serialization failure, deadlock
_RETRYABLE_MYSQL = {1205, 1213}  # lock wait timeout, deadlock


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_retryable(err: DBAPIError) -> bool:
    original = err.orig
    if getattr(original, "sqlstate", None) in _RETRYABLE_PG:
        return True
    args = getattr(original, "args", ())
    if args and args[0] in _RETRYABLE_MYSQL:
        return True
    return "database is locked" in str(original)


def _schema_revision(connection: Connection) -> str | None:
    """The revision Alembic recorded in this database, read without Alembic; None when there is none.

    Only a database whose version table holds exactly one row is read here: anything else is
    left to Alembic's own checks under the migration lock.
    """
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def _now() -> int:
    return int(time.time())


def _selector_hashes(selectors: Iterable[Selector]) -> list[str]:
    return [codec.selector_digest(s) for s in set(selectors)]


class SqlDataStore:
    """DataStore ``sql``: SPIRE's plugin_data (database_type, connection_string, ...)."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._database_type = "sqlite3"
        self._local = threading.local()
        self._reads_at_once: SqliteReadsAtOnce | None = None
        self._reads_on_loop: PostgresNodeReads | None = None

    # --- lifecycle -------------------------------------------------------------------

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        check_connection_settings(parse_plugin_data(SqlConfig, plugin_data))

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(SqlConfig, plugin_data)
        self._database_type = config.database_type
        engine = make_engine(config)
        try:
            self._migrate(engine, apply=not config.disable_migration)
        except OperationalError as err:
            engine.dispose()
            raise Unavailable(f"cannot reach the {config.database_type} database: {err.orig}") from None
        except BaseException:
            engine.dispose()
            raise
        self._engine = engine
        # log_sql: every statement goes through SQLAlchemy, where it is logged.
        if config.database_type == "sqlite3" and not config.log_sql:
            self._reads_at_once = SqliteReadsAtOnce(sqlite_path(config))
        elif config.database_type == "postgres" and not config.log_sql:
            from pyspire.plugin.builtin.sql.postgres_reads import PostgresNodeReads  # noqa: PLC0415 - needs psycopg

            self._reads_on_loop = PostgresNodeReads(postgres_dsn(config))

    @hookimpl
    def close(self) -> None:
        if self._reads_at_once is not None:
            self._reads_at_once.close()
        if self._reads_on_loop is not None:
            self._reads_on_loop.close()
        if self._engine is not None:
            self._engine.dispose()

    def _migrate(self, engine: Engine, *, apply: bool) -> None:
        with engine.connect() as connection:
            if _schema_revision(connection) == SCHEMA_REVISION:
                return
        # Alembic is needed only to create or upgrade a schema, or to say why it will not.
        from alembic import command  # noqa: PLC0415
        from alembic.config import Config as AlembicConfig  # noqa: PLC0415
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
        from alembic.script import ScriptDirectory  # noqa: PLC0415

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        head = ScriptDirectory.from_config(config).get_current_head()
        with engine.connect() as connection:
            connection.info["write"] = True
            with self._mysql_migration_lock(connection), connection.begin():
                if connection.dialect.name == "postgresql":
                    # Held to the end of this transaction; advisory locks are per database.
                    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7346512)")
                current = MigrationContext.configure(connection).get_current_revision()
                if current is None:
                    # Checked under the migration lock: a server starting beside this one may
                    # have created the schema a moment ago.
                    refuse_foreign_tables(inspect(connection).get_table_names())
                elif current not in known:
                    raise FailedPrecondition(
                        f"the database schema is at revision {current}, which this pyspire does not know: "
                        "it was created by a newer pyspire (or another Alembic application); upgrade "
                        "pyspire or use another database"
                    )
                if current != head:
                    if not apply:
                        raise FailedPrecondition(
                            f"the database schema is at revision {current or 'none'} but {head} is needed and "
                            "disable_migration is set"
                        )
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    _log.info("Datastore schema migrated", extra={"from_revision": current, "to_revision": head})

    @contextmanager
    def _mysql_migration_lock(self, connection: Connection) -> Iterator[None]:
        """Keep two servers starting at once from migrating the same MySQL database together.

        MySQL's named lock belongs to the session and to the whole database server: it is
        named after the database (servers of other databases are not held up) and released
        explicitly, or the pooled connection would keep it and block every later start.
        """
        if connection.dialect.name != "mysql":
            yield
            return
        name = f"pyspire_migrations_{connection.engine.url.database}"[:64]
        got = connection.exec_driver_sql("SELECT GET_LOCK(%s, 60)", (name,)).scalar()
        connection.commit()
        if got != 1:
            raise Unavailable(f"another server has been migrating the database for 60 s (lock {name!r} is held)")
        try:
            yield
        finally:
            connection.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
            connection.commit()

    # --- transactions ----------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (configured)."""
        if self._engine is None:
            raise FailedPrecondition("the sql datastore is not configured")
        return self._engine

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                connection.info.pop("write", None)  # pooled connections keep their info dict
                yield connection
        except OperationalError as err:
            raise Unavailable(f"database unavailable: {err.orig}") from None

    def _write(self, work: Callable[[Connection, Events], T]) -> T:
        """Run ``work`` in a write transaction (retried on deadlock), then record its events."""
        for attempt in range(_RETRIES):
            events: Events = []
            try:
                with self.engine.connect() as connection:
                    connection.info["write"] = True
                    try:
                        with connection.begin():
                            result = work(connection, events)
                            self._append_events(connection, events)
                    finally:
                        connection.info.pop("write", None)
                    return result
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
                continue  # a concurrent writer inserted first: re-read and decide again
            except DBAPIError as err:
                if _is_retryable(err) and attempt < _RETRIES - 1:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                if isinstance(err, OperationalError) or err.connection_invalidated:
                    raise Unavailable(f"database unavailable: {err.orig}") from None
                raise Internal(f"database error: {err.orig}") from None
        raise Internal("database write did not complete")  # unreachable: the loop returns or raises

    def _append_events(self, connection: Connection, events: Events) -> None:
        if not events:
            return
        counter = counters.c.name == "change_sequence"
        connection.execute(sql_update(counters).where(counter).values(value=counters.c.value + len(events)))
        last: int = connection.execute(select(counters.c.value).where(counter)).scalar_one()
        first = last - len(events) + 1
        now = _now()
        connection.execute(
            insert(change_events),
            [
                {"sequence": first + offset, "kind": kind.value, "record_key": key, "created_at": now}
                for offset, (kind, key) in enumerate(events)
            ],
        )

    # --- bundles ---------------------------------------------------------------------

    def _load_bundle(self, connection: Connection, name: str, *, lock: bool = False) -> BundleRecord | None:
        query = select(bundles.c.data).where(bundles.c.trust_domain == name)
        data = connection.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        return None if data is None else codec.bundle_from_data(name, data)

    @hookimpl
    def fetch_bundle(self, trust_domain: TrustDomain) -> BundleRecord | None:
        with self._reading() as connection:
            return self._load_bundle(connection, trust_domain.name)

    @hookimpl
    def list_bundles(self, page: Page) -> tuple[list[BundleRecord], str]:
        query = select(bundles).order_by(bundles.c.trust_domain)
        if page.token:
            query = query.where(bundles.c.trust_domain > page.token)
        if page.size:
            query = query.limit(page.size)
        with self._reading() as connection:
            rows = connection.execute(query).mappings().all()
        records = [codec.bundle_from_data(row["trust_domain"], row["data"]) for row in rows]
        token = records[-1].trust_domain.name if page.size and len(records) == page.size else ""
        return records, token

    @hookimpl
    def count_bundles(self) -> int:
        with self._reading() as connection:
            return int(connection.execute(select(func.count()).select_from(bundles)).scalar_one())

    @hookimpl
    def create_bundle(self, bundle: BundleRecord) -> BundleRecord:
        def work(connection: Connection, events: Events) -> BundleRecord:
            if self._load_bundle(connection, bundle.trust_domain.name) is not None:
                raise AlreadyExists(f'a bundle for trust domain "{bundle.trust_domain}" exists')
            connection.execute(
                insert(bundles).values(trust_domain=bundle.trust_domain.name, data=codec.bundle_to_data(bundle))
            )
            events.append((ChangeKind.BUNDLE, bundle.trust_domain.name))
            return bundle

        return self._write(work)

    def _store_bundle(self, connection: Connection, bundle: BundleRecord, exists: bool, events: Events) -> None:
        data = codec.bundle_to_data(bundle)
        name = bundle.trust_domain.name
        if exists:
            connection.execute(sql_update(bundles).where(bundles.c.trust_domain == name).values(data=data))
        else:
            connection.execute(insert(bundles).values(trust_domain=name, data=data))
        events.append((ChangeKind.BUNDLE, name))

    @hookimpl
    def set_bundle(self, bundle: BundleRecord) -> BundleRecord:
        def work(connection: Connection, events: Events) -> BundleRecord:
            current = self._load_bundle(connection, bundle.trust_domain.name, lock=True)
            self._store_bundle(connection, bundle, current is not None, events)
            return bundle

        return self._write(work)

    @hookimpl
    def modify_bundle(
        self, trust_domain: TrustDomain, update: Callable[[BundleRecord | None], BundleRecord | None]
    ) -> BundleRecord | None:
        def work(connection: Connection, events: Events) -> BundleRecord | None:
            current = self._load_bundle(connection, trust_domain.name, lock=True)
            changed = update(current)
            if changed is None or changed is current:
                return current
            if changed.trust_domain != trust_domain:
                raise Internal("modify_bundle's update changed the trust domain")
            self._store_bundle(connection, changed, current is not None, events)
            return changed

        return self._write(work)

    @hookimpl
    def delete_bundle(self, trust_domain: TrustDomain, mode: BundleDeleteMode) -> None:
        def work(connection: Connection, events: Events) -> None:
            if self._load_bundle(connection, trust_domain.name, lock=True) is None:
                raise NotFound(f'no bundle for trust domain "{trust_domain}"')
            using = self._federating_entries(connection, trust_domain)
            if using and mode is BundleDeleteMode.RESTRICT:
                raise FailedPrecondition(
                    f'{len(using)} registration entries federate with "{trust_domain}"; delete or dissociate them first'
                )
            for entry in using:
                if mode is BundleDeleteMode.DELETE:
                    self._delete_entry_rows(connection, entry.id)
                else:
                    kept = tuple(td for td in entry.federates_with if td != trust_domain)
                    self._update_entry_rows(
                        connection, replace(entry, federates_with=kept, revision_number=entry.revision_number + 1)
                    )
                events.append((ChangeKind.ENTRY, entry.id))
            connection.execute(delete(bundles).where(bundles.c.trust_domain == trust_domain.name))
            events.append((ChangeKind.BUNDLE, trust_domain.name))

        self._write(work)

    # --- registration entries --------------------------------------------------------

    def _federating_entries(self, connection: Connection, trust_domain: TrustDomain) -> list[RegistrationEntry]:
        ids = select(entry_federates_with.c.entry_id).where(entry_federates_with.c.trust_domain == trust_domain.name)
        rows = connection.execute(select(*codec.ENTRY_COLUMNS).where(registered_entries.c.id.in_(ids)))
        return [codec.entry_from_row(row) for row in rows]

    def _check_federated_bundles(self, connection: Connection, entries: Iterable[RegistrationEntry]) -> None:
        wanted = sorted({td.name for entry in entries for td in entry.federates_with})
        if not wanted:
            return
        present: set[str] = set()
        for chunk in _chunks(wanted):
            present.update(
                connection.execute(select(bundles.c.trust_domain).where(bundles.c.trust_domain.in_(chunk))).scalars()
            )
        missing = [name for name in wanted if name not in present]
        if missing:
            raise FailedPrecondition(f'unable to find federated bundle "spiffe://{missing[0]}"')

    def _insert_entry_index(self, connection: Connection, entries: Sequence[RegistrationEntry]) -> None:
        selector_rows = [
            {"entry_id": entry.id, "selector_hash": digest}
            for entry in entries
            for digest in _selector_hashes(entry.selectors)
        ]
        federation_rows = [
            {"entry_id": entry.id, "trust_domain": td.name} for entry in entries for td in entry.federates_with
        ]
        if selector_rows:
            connection.execute(insert(entry_selectors), selector_rows)
        if federation_rows:
            connection.execute(insert(entry_federates_with), federation_rows)

    def _delete_entry_rows(self, connection: Connection, entry_id: str) -> None:
        connection.execute(delete(entry_selectors).where(entry_selectors.c.entry_id == entry_id))
        connection.execute(delete(entry_federates_with).where(entry_federates_with.c.entry_id == entry_id))
        connection.execute(delete(registered_entries).where(registered_entries.c.id == entry_id))

    def _update_entry_rows(self, connection: Connection, entry: RegistrationEntry) -> None:
        row = codec.entry_row(entry)
        connection.execute(sql_update(registered_entries).where(registered_entries.c.id == entry.id).values(**row))
        connection.execute(delete(entry_selectors).where(entry_selectors.c.entry_id == entry.id))
        connection.execute(delete(entry_federates_with).where(entry_federates_with.c.entry_id == entry.id))
        self._insert_entry_index(connection, [entry])

    def _entries_where(self, connection: Connection, column: Any, values: Sequence[str]) -> list[RegistrationEntry]:
        found: list[RegistrationEntry] = []
        for chunk in _chunks(values):
            rows = connection.execute(select(*codec.ENTRY_COLUMNS).where(column.in_(chunk)))
            found.extend(codec.entry_from_row(row) for row in rows)
        return found

    @hookimpl
    def create_registration_entries(self, entries: Sequence[RegistrationEntry]) -> list[CreatedEntry]:
        now = _now()
        prepared = [
            replace(entry.normalized(), id=entry.id or str(uuid.uuid4()), created_at=now, revision_number=0)
            for entry in entries
        ]

        def work(connection: Connection, events: Events) -> list[CreatedEntry]:
            self._check_federated_bundles(connection, prepared)
            identities = [codec.entry_identity(entry) for entry in prepared]
            by_identity = {
                codec.entry_identity(existing): existing
                for existing in self._entries_where(
                    connection, registered_entries.c.identity_hash, sorted(set(identities))
                )
            }
            by_id = {
                existing.id: existing
                for existing in self._entries_where(
                    connection, registered_entries.c.id, sorted({e.id for e in prepared})
                )
            }
            results: list[CreatedEntry] = []
            new: list[RegistrationEntry] = []
            for entry, identity in zip(prepared, identities, strict=True):
                existing = by_identity.get(identity) or by_id.get(entry.id)
                if existing is not None:
                    results.append(CreatedEntry(existing, created=False))
                    continue
                by_identity[identity] = by_id[entry.id] = entry
                new.append(entry)
                results.append(CreatedEntry(entry, created=True))
            if new:
                connection.execute(insert(registered_entries), [codec.entry_row(entry) for entry in new])
                self._insert_entry_index(connection, new)
                events.extend((ChangeKind.ENTRY, entry.id) for entry in new)
            return results

        return self._write(work)

    @hookimpl
    def fetch_registration_entry(self, entry_id: str) -> RegistrationEntry | None:
        with self._reading() as connection:
            row = connection.execute(select(*codec.ENTRY_COLUMNS).where(registered_entries.c.id == entry_id)).first()
        return None if row is None else codec.entry_from_row(row)

    @hookimpl
    def fetch_registration_entries(self, entry_ids: Sequence[str]) -> list[RegistrationEntry]:
        with self._reading() as connection:
            return self._entries_where(connection, registered_entries.c.id, sorted(set(entry_ids)))

    def _entry_query(self, entry_filter: EntryFilter) -> Any:
        query = select(*codec.ENTRY_COLUMNS)
        entries = registered_entries.c
        if entry_filter.by_spiffe_id is not None:
            query = query.where(entries.spiffe_id_hash == codec.digest(str(entry_filter.by_spiffe_id)))
        if entry_filter.by_parent_id is not None:
            query = query.where(entries.parent_id_hash == codec.digest(str(entry_filter.by_parent_id)))
        if entry_filter.by_hint is not None:
            query = query.where(entries.hint == entry_filter.by_hint)
        if entry_filter.by_downstream is not None:
            query = query.where(entries.downstream == entry_filter.by_downstream)
        if entry_filter.by_selectors is not None:
            selectors, behavior = entry_filter.by_selectors
            if selectors or behavior is not MatchBehavior.SUPERSET:
                # Every match needs a shared selector (entries always have some): narrow in
                # SQL, then apply the exact set semantics in Python.
                ids = select(entry_selectors.c.entry_id).where(
                    entry_selectors.c.selector_hash.in_(_selector_hashes(selectors))
                )
                query = query.where(entries.id.in_(ids))
        if entry_filter.by_federates_with is not None:
            domains, behavior = entry_filter.by_federates_with
            if domains and behavior is not MatchBehavior.SUBSET:
                ids = select(entry_federates_with.c.entry_id).where(
                    entry_federates_with.c.trust_domain.in_([td.name for td in domains])
                )
                query = query.where(entries.id.in_(ids))
        return query

    @staticmethod
    def _entry_matches(entry: RegistrationEntry, entry_filter: EntryFilter) -> bool:
        if entry_filter.by_selectors is not None:
            selectors, behavior = entry_filter.by_selectors
            if not behavior.matches(entry.selectors, selectors):
                return False
        if entry_filter.by_federates_with is not None:
            domains, behavior = entry_filter.by_federates_with
            if not behavior.matches(entry.federates_with, domains):
                return False
        return True

    @hookimpl
    def list_registration_entries(self, entry_filter: EntryFilter, page: Page) -> tuple[list[RegistrationEntry], str]:
        base = self._entry_query(entry_filter).order_by(registered_entries.c.id)
        batch = page.size if page.size else 5000
        found: list[RegistrationEntry] = []
        cursor = page.token
        with self._reading() as connection:
            while True:
                query = base.where(registered_entries.c.id > cursor) if cursor else base
                rows = connection.execute(query.limit(batch)).all()
                for row in rows:
                    entry = codec.entry_from_row(row)
                    cursor = entry.id
                    if self._entry_matches(entry, entry_filter):
                        found.append(entry)
                        if page.size and len(found) == page.size:
                            return found, cursor
                if len(rows) < batch:
                    return found, ""

    @hookimpl
    def count_registration_entries(self, entry_filter: EntryFilter) -> int:
        if entry_filter.by_selectors is None and entry_filter.by_federates_with is None:
            query = select(func.count()).select_from(self._entry_query(entry_filter).subquery())
            with self._reading() as connection:
                return int(connection.execute(query).scalar_one())
        entries, _ = self.list_registration_entries(entry_filter, Page())
        return len(entries)

    @hookimpl
    def update_registration_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        def work(connection: Connection, events: Events) -> RegistrationEntry:
            row = connection.execute(
                select(*codec.ENTRY_COLUMNS).where(registered_entries.c.id == entry.id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f'no registration entry with ID "{entry.id}"')
            current = codec.entry_from_row(row)
            updated = replace(
                entry.normalized(), created_at=current.created_at, revision_number=current.revision_number + 1
            )
            identity = codec.entry_identity(updated)
            clash = connection.execute(
                select(registered_entries.c.id).where(
                    registered_entries.c.identity_hash == identity, registered_entries.c.id != entry.id
                )
            ).scalar_one_or_none()
            if clash is not None:
                raise AlreadyExists(f'entry "{clash}" already has this SPIFFE ID, parent ID and selectors')
            self._check_federated_bundles(connection, [updated])
            self._update_entry_rows(connection, updated)
            events.append((ChangeKind.ENTRY, updated.id))
            return updated

        return self._write(work)

    @hookimpl
    def delete_registration_entry(self, entry_id: str) -> RegistrationEntry | None:
        def work(connection: Connection, events: Events) -> RegistrationEntry | None:
            row = connection.execute(
                select(*codec.ENTRY_COLUMNS).where(registered_entries.c.id == entry_id).with_for_update()
            ).first()
            if row is None:
                return None
            self._delete_entry_rows(connection, entry_id)
            events.append((ChangeKind.ENTRY, entry_id))
            return codec.entry_from_row(row)

        return self._write(work)

    @hookimpl
    def prune_registration_entries(self, expires_before: int) -> int:
        def work(connection: Connection, events: Events) -> int:
            ids: list[str] = list(
                connection.execute(
                    select(registered_entries.c.id).where(
                        registered_entries.c.expires_at != 0, registered_entries.c.expires_at < expires_before
                    )
                )
                .scalars()
                .all()
            )
            for entry_id in ids:
                self._delete_entry_rows(connection, entry_id)
                events.append((ChangeKind.ENTRY, entry_id))
            return len(ids)

        return self._write(work)

    # --- attested nodes --------------------------------------------------------------

    def _load_node(self, connection: Connection, spiffe_id: SpiffeId, *, lock: bool = False) -> AttestedNode | None:
        query = select(*codec.NODE_COLUMNS).where(attested_nodes.c.spiffe_id_hash == codec.digest(str(spiffe_id)))
        row = connection.execute(query.with_for_update() if lock else query).first()
        return None if row is None else codec.node_from_row(row)

    def _write_node_selectors(self, connection: Connection, node: AttestedNode) -> None:
        node_hash = codec.digest(str(node.spiffe_id))
        connection.execute(delete(node_selectors).where(node_selectors.c.node_hash == node_hash))
        rows = [{"node_hash": node_hash, "selector_hash": digest} for digest in _selector_hashes(node.selectors)]
        if rows:
            connection.execute(insert(node_selectors), rows)

    @hookimpl
    def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        def work(connection: Connection, events: Events) -> AttestedNode:
            if self._load_node(connection, node.spiffe_id) is not None:
                raise AlreadyExists(f'agent "{node.spiffe_id}" is already attested')
            connection.execute(insert(attested_nodes).values(**codec.node_row(node)))
            self._write_node_selectors(connection, node)
            events.append((ChangeKind.NODE, str(node.spiffe_id)))
            return node

        return self._write(work)

    @hookimpl
    def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        with self._reading() as connection:
            if self._database_type == "postgres":
                # Every agent call makes this read: as one statement in autocommit it sees the
                # same committed state, without the BEGIN and ROLLBACK round trips around it.
                connection.execution_options(isolation_level="AUTOCOMMIT")
            return self._load_node(connection, spiffe_id)

    @hookimpl
    def read_attested_node_at_once(self, spiffe_id: SpiffeId) -> NodeReadAtOnce | None:
        return None if self._reads_at_once is None else self._reads_at_once.attested_node(spiffe_id)

    @hookimpl
    def read_attested_node_on_loop(self, spiffe_id: SpiffeId) -> Coroutine[Any, Any, NodeReadAtOnce | None] | None:
        return None if self._reads_on_loop is None else self._reads_on_loop.attested_node(spiffe_id)

    def _node_query(self, node_filter: NodeFilter) -> Any:
        nodes = attested_nodes.c
        # The hash is the paging cursor, read before the node's own columns.
        query = select(attested_nodes.c.spiffe_id_hash, *codec.NODE_COLUMNS)
        if node_filter.by_attestation_type is not None:
            query = query.where(nodes.attestation_type == node_filter.by_attestation_type)
        if node_filter.by_banned is not None:
            banned = (nodes.cert_serial_number == "") & (nodes.new_cert_serial_number == "")
            query = query.where(banned if node_filter.by_banned else ~banned)
        if node_filter.by_can_reattest is not None:
            query = query.where(nodes.can_reattest == node_filter.by_can_reattest)
        if node_filter.by_expires_before is not None:
            query = query.where(nodes.cert_not_after < node_filter.by_expires_before)
        if node_filter.by_selectors is not None:
            selectors, behavior = node_filter.by_selectors
            if selectors or behavior is not MatchBehavior.SUPERSET:
                hashes = select(node_selectors.c.node_hash).where(
                    node_selectors.c.selector_hash.in_(_selector_hashes(selectors))
                )
                query = query.where(nodes.spiffe_id_hash.in_(hashes))
        return query

    @hookimpl
    def list_attested_nodes(self, node_filter: NodeFilter, page: Page) -> tuple[list[AttestedNode], str]:
        base = self._node_query(node_filter).order_by(attested_nodes.c.spiffe_id_hash)
        batch = page.size if page.size else 5000
        found: list[AttestedNode] = []
        cursor = page.token
        with self._reading() as connection:
            while True:
                query = base.where(attested_nodes.c.spiffe_id_hash > cursor) if cursor else base
                rows = connection.execute(query.limit(batch)).all()
                for node_hash, *columns in rows:
                    cursor = str(node_hash)
                    node = codec.node_from_row(columns)
                    if node_filter.by_selectors is not None:
                        selectors, behavior = node_filter.by_selectors
                        if not behavior.matches(node.selectors, selectors):
                            continue
                    found.append(node)
                    if page.size and len(found) == page.size:
                        return found, cursor
                if len(rows) < batch:
                    return found, ""

    @hookimpl
    def count_attested_nodes(self, node_filter: NodeFilter) -> int:
        if node_filter.by_selectors is None:
            query = select(func.count()).select_from(self._node_query(node_filter).subquery())
            with self._reading() as connection:
                return int(connection.execute(query).scalar_one())
        nodes, _ = self.list_attested_nodes(node_filter, Page())
        return len(nodes)

    @hookimpl
    def modify_attested_node(self, spiffe_id: SpiffeId, update: Callable[[AttestedNode], AttestedNode]) -> AttestedNode:
        def work(connection: Connection, events: Events) -> AttestedNode:
            current = self._load_node(connection, spiffe_id, lock=True)
            if current is None:
                raise NotFound(f'agent "{spiffe_id}" is not attested')
            changed = update(current)
            if changed is current:
                return current
            if changed.spiffe_id != spiffe_id:
                raise Internal("modify_attested_node's update changed the agent ID")
            row = codec.node_row(changed)
            connection.execute(
                sql_update(attested_nodes).where(attested_nodes.c.spiffe_id_hash == row["spiffe_id_hash"]).values(**row)
            )
            self._write_node_selectors(connection, changed)
            events.append((ChangeKind.NODE, str(spiffe_id)))
            return changed

        return self._write(work)

    @hookimpl
    def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        def work(connection: Connection, events: Events) -> AttestedNode | None:
            current = self._load_node(connection, spiffe_id, lock=True)
            if current is None:
                return None
            node_hash = codec.digest(str(spiffe_id))
            connection.execute(delete(node_selectors).where(node_selectors.c.node_hash == node_hash))
            connection.execute(delete(attested_nodes).where(attested_nodes.c.spiffe_id_hash == node_hash))
            events.append((ChangeKind.NODE, str(spiffe_id)))
            return current

        return self._write(work)

    @hookimpl
    def prune_attested_nodes(self, expired_before: int, include_non_reattestable: bool) -> int:
        def work(connection: Connection, events: Events) -> int:
            nodes = attested_nodes.c
            query = select(nodes.spiffe_id_hash, nodes.spiffe_id).where(
                nodes.cert_not_after < expired_before,
                (nodes.cert_serial_number != "") | (nodes.new_cert_serial_number != ""),
            )
            if not include_non_reattestable:
                query = query.where(nodes.can_reattest.is_(True))
            rows = connection.execute(query).all()
            for node_hash, spiffe_id in rows:
                connection.execute(delete(node_selectors).where(node_selectors.c.node_hash == node_hash))
                connection.execute(delete(attested_nodes).where(nodes.spiffe_id_hash == node_hash))
                events.append((ChangeKind.NODE, str(spiffe_id)))
            return len(rows)

        return self._write(work)

    # --- join tokens -----------------------------------------------------------------

    @hookimpl
    def create_join_token(self, token: JoinToken) -> None:
        def work(connection: Connection, events: Events) -> None:
            exists = connection.execute(select(join_tokens.c.token).where(join_tokens.c.token == token.token)).first()
            if exists is not None:
                raise AlreadyExists("a join token with this value exists")
            connection.execute(insert(join_tokens).values(token=token.token, expires_at=token.expires_at))

        self._write(work)

    @hookimpl
    def take_join_token(self, token: str) -> JoinToken | None:
        def work(connection: Connection, events: Events) -> JoinToken | None:
            row = (
                connection.execute(select(join_tokens).where(join_tokens.c.token == token).with_for_update())
                .mappings()
                .first()
            )
            if row is None:
                return None
            deleted = connection.execute(delete(join_tokens).where(join_tokens.c.token == token)).rowcount
            # Exactly one transaction deletes the row; any other saw it gone or blocked on it.
            return JoinToken(row["token"], row["expires_at"]) if deleted == 1 else None

        return self._write(work)

    @hookimpl
    def prune_join_tokens(self, expires_before: int) -> int:
        def work(connection: Connection, events: Events) -> int:
            return int(
                connection.execute(delete(join_tokens).where(join_tokens.c.expires_at < expires_before)).rowcount
            )

        return self._write(work)

    # --- federation relationships ----------------------------------------------------

    def _load_relationship(
        self, connection: Connection, name: str, *, lock: bool = False
    ) -> FederationRelationship | None:
        query = select(federation_relationships).where(federation_relationships.c.trust_domain == name)
        row = connection.execute(query.with_for_update() if lock else query).mappings().first()
        return None if row is None else codec.relationship_from_row(row)

    @hookimpl
    def create_federation_relationship(self, relationship: FederationRelationship) -> FederationRelationship:
        def work(connection: Connection, events: Events) -> FederationRelationship:
            if self._load_relationship(connection, relationship.trust_domain.name) is not None:
                raise AlreadyExists(f'a federation relationship with "{relationship.trust_domain}" exists')
            connection.execute(insert(federation_relationships).values(**codec.relationship_row(relationship)))
            events.append((ChangeKind.FEDERATION, relationship.trust_domain.name))
            return relationship

        return self._write(work)

    @hookimpl
    def fetch_federation_relationship(self, trust_domain: TrustDomain) -> FederationRelationship | None:
        with self._reading() as connection:
            return self._load_relationship(connection, trust_domain.name)

    @hookimpl
    def list_federation_relationships(self, page: Page) -> tuple[list[FederationRelationship], str]:
        query = select(federation_relationships).order_by(federation_relationships.c.trust_domain)
        if page.token:
            query = query.where(federation_relationships.c.trust_domain > page.token)
        if page.size:
            query = query.limit(page.size)
        with self._reading() as connection:
            found = [codec.relationship_from_row(row) for row in connection.execute(query).mappings()]
        token = found[-1].trust_domain.name if page.size and len(found) == page.size else ""
        return found, token

    @hookimpl
    def update_federation_relationship(self, relationship: FederationRelationship) -> FederationRelationship:
        def work(connection: Connection, events: Events) -> FederationRelationship:
            name = relationship.trust_domain.name
            if self._load_relationship(connection, name, lock=True) is None:
                raise NotFound(f'no federation relationship with "{name}"')
            connection.execute(
                sql_update(federation_relationships)
                .where(federation_relationships.c.trust_domain == name)
                .values(**codec.relationship_row(relationship))
            )
            events.append((ChangeKind.FEDERATION, name))
            return relationship

        return self._write(work)

    @hookimpl
    def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        def work(connection: Connection, events: Events) -> None:
            deleted = connection.execute(
                delete(federation_relationships).where(federation_relationships.c.trust_domain == trust_domain.name)
            ).rowcount
            if not deleted:
                raise NotFound(f'no federation relationship with "{trust_domain}"')
            events.append((ChangeKind.FEDERATION, trust_domain.name))

        self._write(work)

    # --- CA journals -----------------------------------------------------------------

    @hookimpl
    def set_ca_journal(self, journal: CaJournal) -> CaJournal:
        def work(connection: Connection, events: Events) -> CaJournal:
            values = {"active_x509_authority_id": journal.active_x509_authority_id, "data": journal.data}
            if journal.id == 0:
                result = connection.execute(insert(ca_journals).values(**values))
                return replace(journal, id=int(result.inserted_primary_key[0]))  # type: ignore[index]
            updated = connection.execute(
                sql_update(ca_journals).where(ca_journals.c.id == journal.id).values(**values)
            ).rowcount
            if not updated:
                raise NotFound(f"no CA journal with ID {journal.id}")
            return journal

        return self._write(work)

    @hookimpl
    def fetch_ca_journal(self, active_x509_authority_id: str) -> CaJournal | None:
        query = select(ca_journals).where(ca_journals.c.active_x509_authority_id == active_x509_authority_id)
        with self._reading() as connection:
            row = connection.execute(query.order_by(ca_journals.c.id.desc())).mappings().first()
        return None if row is None else CaJournal(row["id"], row["active_x509_authority_id"], bytes(row["data"]))

    @hookimpl
    def list_ca_journals(self) -> list[CaJournal]:
        with self._reading() as connection:
            rows = connection.execute(select(ca_journals).order_by(ca_journals.c.id)).mappings().all()
        return [CaJournal(row["id"], row["active_x509_authority_id"], bytes(row["data"])) for row in rows]

    @hookimpl
    def delete_ca_journal(self, journal_id: int) -> None:
        def work(connection: Connection, events: Events) -> None:
            connection.execute(delete(ca_journals).where(ca_journals.c.id == journal_id))

        self._write(work)

    # --- change events ---------------------------------------------------------------

    @hookimpl
    def list_change_events(self, after_sequence: int, limit: int) -> list[ChangeEvent]:
        query = (
            select(change_events)
            .where(change_events.c.sequence > after_sequence)
            .order_by(change_events.c.sequence)
            .limit(limit)
        )
        with self._reading() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            ChangeEvent(row["sequence"], ChangeKind(row["kind"]), row["record_key"], row["created_at"]) for row in rows
        ]

    @hookimpl
    def last_change_sequence(self) -> int:
        with self._reading() as connection:
            return int(
                connection.execute(select(counters.c.value).where(counters.c.name == "change_sequence")).scalar_one()
            )

    @hookimpl
    def prune_change_events(self, created_before: int) -> int:
        def work(connection: Connection, events: Events) -> int:
            return int(
                connection.execute(delete(change_events).where(change_events.c.created_at < created_before)).rowcount
            )

        return self._write(work)
