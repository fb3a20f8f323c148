"""CA rotation as SPIRE does it, the journal across restarts, taint and revoke, minting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.plugin.errors import Internal, InvalidArgument
from pyspire.plugin.facades import DataStore, KeyManager
from pyspire.plugin.keys import KeyType
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.server.ca.authority import CaManager, CaSettings, activate_at, ca_subject_name, prepare_at
from pyspire.server.ca.issuer import CredentialIssuer
from pyspire.spiffe import Bundle, JwtSvid, SpiffeId, TrustDomain, verify_x509_svid

from tests.support.databases import postgres_database

TD = TrustDomain("example.org")
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta.total_seconds()


@dataclass
class Server:
    manager: CaManager
    issuer: CredentialIssuer
    datastore: DataStore
    key_manager: KeyManager
    clock: Clock

    def bundle(self) -> Bundle:
        record = self.datastore.fetch_bundle(TD)
        assert record is not None
        certificates = [x509.load_der_x509_certificate(a.der) for a in record.x509_authorities]
        keys = {k.key_id: serialization.load_der_public_key(k.public_key_der) for k in record.jwt_authorities}
        return Bundle(TD, certificates, keys)  # type: ignore[arg-type]


def settings(ca_ttl: timedelta = timedelta(hours=24), *, disable_jwt: bool = False) -> CaSettings:
    return CaSettings(
        TD, ca_ttl, KeyType.EC_P256, KeyType.EC_P256, ca_subject_name(("US",), ("SPIFFE",), ""), disable_jwt
    )


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[DataStore]:
    handle = load_plugin(
        "server",
        "DataStore",
        "sql",
        {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.db")},
        make_core_config(tmp_path),
    )
    assert isinstance(handle, DataStore)
    yield handle
    handle.close()


def start_server(
    tmp_path: Path,
    datastore: DataStore,
    *,
    key_manager: str = "disk",
    ca_ttl: timedelta = timedelta(hours=24),
    clock: Clock | None = None,
) -> Server:
    plugin_data = {"keys_path": str(tmp_path / "keys.json")} if key_manager == "disk" else {}
    km = load_plugin("server", "KeyManager", key_manager, plugin_data, make_core_config(tmp_path))
    assert isinstance(km, KeyManager)
    clock = clock or Clock()
    manager = CaManager(settings(ca_ttl), km, datastore, clock=clock)
    manager.start()
    issuer = CredentialIssuer(TD, manager.active_x509, manager.active_jwt, clock=clock)
    return Server(manager, issuer, datastore, km, clock)


def svid_verifies(server: Server, at: float) -> SpiffeId:
    key = ec.generate_private_key(ec.SECP256R1())
    chain = server.issuer.sign_workload_x509_svid(
        key.public_key(), SpiffeId.parse("spiffe://example.org/w"), timedelta(minutes=5)
    )
    spiffe_id, _ = verify_x509_svid(chain, server.bundle(), now=datetime.fromtimestamp(at + 1, UTC))
    return spiffe_id


def test_first_start_creates_and_publishes_a_ca_and_a_jwt_key(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    active, prepared, old = server.manager.x509_states()
    assert active is not None
    assert prepared is None
    assert old is None
    authority = server.manager.active_x509()
    assert authority.self_signed
    assert authority.not_after - authority.not_before == timedelta(hours=24, seconds=10)  # 10 s backdated
    bundle = server.bundle()
    assert bundle.x509_authorities == (authority.certificate,)
    jwt_active = server.manager.active_jwt()
    assert jwt_active is not None
    assert list(bundle.jwt_authorities) == [jwt_active.kid]
    assert svid_verifies(server, server.clock.now) == SpiffeId.parse("spiffe://example.org/w")


@pytest.mark.parametrize(
    ("ca_ttl", "prepare_after", "activate_after"),
    [
        (timedelta(hours=24), timedelta(hours=12), timedelta(hours=20)),
        (timedelta(days=90), timedelta(days=60), timedelta(days=83)),
    ],
)
def test_rotation_prepares_at_half_life_and_activates_at_one_sixth(
    tmp_path: Path, datastore: DataStore, ca_ttl: timedelta, prepare_after: timedelta, activate_after: timedelta
) -> None:
    server = start_server(tmp_path, datastore, ca_ttl=ca_ttl)
    first = server.manager.active_x509()
    margin = timedelta(seconds=20)  # the CA is backdated 10 s; step clear of the boundary
    server.clock.advance(prepare_after - margin)
    assert not server.manager.rotate()
    server.clock.advance(2 * margin)
    assert server.manager.rotate()
    _, prepared, _ = server.manager.x509_states()
    assert prepared is not None
    assert len(server.bundle().x509_authorities) == 2  # published before it signs anything
    assert server.manager.active_x509() == first
    server.clock.advance(activate_after - prepare_after - 2 * margin)
    assert not server.manager.rotate()
    server.clock.advance(2 * margin)
    assert server.manager.rotate()
    active, prepared_after, old = server.manager.x509_states()
    assert active is not None
    assert active.authority_id == prepared.authority_id
    assert prepared_after is None
    assert old is not None
    assert old.authority_id == first.authority_id
    assert first.certificate in server.bundle().x509_authorities  # the old root stays published
    assert svid_verifies(server, server.clock.now)


def test_rotation_thresholds_match_spire() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert prepare_at(start, start + timedelta(hours=24)) == start + timedelta(hours=12)
    assert activate_at(start, start + timedelta(hours=24)) == start + timedelta(hours=20)
    assert prepare_at(start, start + timedelta(days=365)) == start + timedelta(days=335)
    assert activate_at(start, start + timedelta(days=365)) == start + timedelta(days=358)


def test_svids_never_outlive_the_ca(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    server.clock.advance(timedelta(hours=11))
    key = ec.generate_private_key(ec.SECP256R1())
    (leaf,) = server.issuer.sign_workload_x509_svid(
        key.public_key(), SpiffeId.parse("spiffe://example.org/w"), timedelta(days=30)
    )
    assert leaf.not_valid_after_utc == server.manager.active_x509().not_after
    assert leaf.not_valid_before_utc == datetime.fromtimestamp(server.clock.now, UTC) - timedelta(seconds=10)
    minted = server.issuer.mint_jwt_svid(SpiffeId.parse("spiffe://example.org/w"), ["db"], timedelta(days=30))
    jwt_key = server.manager.active_jwt()
    assert jwt_key is not None
    assert minted.expires_at == int(jwt_key.not_after.timestamp())


def test_restart_with_disk_key_manager_resumes_the_same_authorities(tmp_path: Path, datastore: DataStore) -> None:
    first = start_server(tmp_path, datastore)
    first.clock.advance(timedelta(hours=13))
    first.manager.rotate()  # a prepared authority exists too
    states = first.manager.x509_states()
    jwt = first.manager.jwt_states()
    bundle = first.bundle()
    second = start_server(tmp_path, datastore, clock=first.clock)
    assert second.manager.x509_states() == states
    assert second.manager.jwt_states() == jwt
    assert second.bundle() == bundle
    assert svid_verifies(second, second.clock.now)


def test_restart_with_memory_key_manager_makes_a_new_ca_and_keeps_the_old_root(
    tmp_path: Path, datastore: DataStore
) -> None:
    first = start_server(tmp_path, datastore, key_manager="memory")
    old_root = first.manager.active_x509().certificate
    token = first.issuer.mint_jwt_svid(SpiffeId.parse("spiffe://example.org/w"), ["db"], timedelta(minutes=5)).token
    second = start_server(tmp_path, datastore, key_manager="memory", clock=first.clock)
    assert second.manager.active_x509().certificate != old_root
    bundle = second.bundle()
    assert old_root in bundle.x509_authorities  # SVIDs of the previous run still verify
    JwtSvid.parse_and_validate(token, bundle, ["db"], now=second.clock.now)


def test_old_authorities_leave_the_bundle_a_day_after_they_expire(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    first_root = server.manager.active_x509().certificate
    for _ in range(6):  # ~3 days of 12 h steps: rotations and prunes
        server.clock.advance(timedelta(hours=12, minutes=1))
        server.manager.rotate()
    assert first_root not in server.bundle().x509_authorities
    assert len(server.bundle().x509_authorities) <= 3


def test_taint_and_revoke_follow_the_rules(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    manager = server.manager
    first = manager.active_x509()
    with pytest.raises(InvalidArgument, match="unable to taint current local authority"):
        manager.taint_x509(first.authority_id)
    prepared = manager.prepare_x509()
    manager.activate_x509(prepared.authority_id)
    with pytest.raises(Internal, match="not possible to revoke an untainted root CA"):
        manager.revoke_x509(first.authority_id)
    manager.taint_x509(first.authority_id)
    record = server.datastore.fetch_bundle(TD)
    assert record is not None
    assert [a.tainted for a in record.x509_authorities] == [True, False]
    manager.revoke_x509(first.authority_id)
    assert first.certificate not in server.bundle().x509_authorities
    assert manager.x509_states()[2] is None


def test_revoked_jwt_key_stops_validating(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    manager = server.manager
    token = server.issuer.mint_jwt_svid(SpiffeId.parse("spiffe://example.org/w"), ["db"], timedelta(minutes=5)).token
    old_kid = manager.jwt_states()[0].authority_id  # type: ignore[union-attr]
    manager.activate_jwt(manager.prepare_jwt().authority_id)
    JwtSvid.parse_and_validate(token, server.bundle(), ["db"], now=server.clock.now)
    manager.taint_jwt(old_kid)
    manager.revoke_jwt(old_kid)
    with pytest.raises(Exception, match="no JWT authority"):
        JwtSvid.parse_and_validate(token, server.bundle(), ["db"], now=server.clock.now)
    fresh = server.issuer.mint_jwt_svid(SpiffeId.parse("spiffe://example.org/w"), ["db"], timedelta(minutes=5)).token
    JwtSvid.parse_and_validate(fresh, server.bundle(), ["db"], now=server.clock.now)


def test_activate_requires_the_prepared_authority(tmp_path: Path, datastore: DataStore) -> None:
    server = start_server(tmp_path, datastore)
    with pytest.raises(InvalidArgument, match="unexpected authority ID"):
        server.manager.activate_x509("deadbeef")


def test_a_journal_write_that_fails_once_is_saved_at_the_next_step(tmp_path: Path) -> None:
    """Reliability case 24: one CA-journal write refused by PostgreSQL (a trigger) is retried.

    Regression: the journal was saved only in the step that changed the authorities; after a
    failed save, a restart came back without the prepared authority the KeyManager holds.
    """
    psycopg = pytest.importorskip("psycopg")
    with postgres_database() as dsn:
        handle = load_plugin(
            "server",
            "DataStore",
            "sql",
            {"database_type": "postgres", "connection_string": dsn},
            make_core_config(tmp_path),
        )
        assert isinstance(handle, DataStore)
        try:
            first = start_server(tmp_path, handle)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no space left'; END $$"
                    " LANGUAGE plpgsql"
                )
                admin.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON ca_journals FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
                first.clock.advance(timedelta(hours=13))
                with pytest.raises(Internal, match="could not save the CA journal"):
                    first.manager.rotate()  # prepares the next authority; its journal entry is refused
                states = first.manager.x509_states()
                assert sum(state is not None for state in states) == 2  # active and prepared
                admin.execute("DROP TRIGGER refuse ON ca_journals")
            assert first.manager.rotate() is False  # nothing new, but the journal is saved now
            second = start_server(tmp_path, handle, clock=first.clock)
            assert second.manager.x509_states() == states
        finally:
            handle.close()


def test_rotation_refusals_are_spires(tmp_path: Path, datastore: DataStore) -> None:
    """Found by the differential corpus: SPIRE's codes and words for each wrong rotation step."""
    manager = start_server(tmp_path, datastore).manager
    first = manager.active_x509().authority_id
    prepared = manager.prepare_x509().authority_id
    with pytest.raises(InvalidArgument, match=r"^only Old local authorities can be tainted"):
        manager.taint_x509(prepared)
    with pytest.raises(InvalidArgument, match=r"^invalid authority ID: only Old local authority can be revoked$"):
        manager.revoke_x509(prepared)
    manager.activate_x509(prepared)
    with pytest.raises(Internal, match=r"^only Prepared authorities can be activated"):
        manager.activate_x509(first)
    with pytest.raises(InvalidArgument, match=r"^invalid authority ID: unable to use current authority$"):
        manager.revoke_x509(prepared)
    manager.taint_x509(first)
    with pytest.raises(Internal, match=r"root CA is already tainted$"):
        manager.taint_x509(first)
    old_kid = manager.jwt_states()[0].authority_id  # type: ignore[union-attr]
    new_kid = manager.prepare_jwt().authority_id
    with pytest.raises(InvalidArgument, match=r"^invalid authority ID: unable to use a prepared key$"):
        manager.revoke_jwt(new_kid)
    manager.activate_jwt(new_kid)
    with pytest.raises(Internal, match=r"not possible to revoke an untainted key$"):
        manager.revoke_jwt(old_kid)
    with pytest.raises(InvalidArgument, match=r"no JWT authority found with provided authority ID$"):
        manager.revoke_jwt("no-such-key")
