"""The bundle refresher against a real bundle endpoint and a real SQLite datastore."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import FederationRelationship
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.server.cache.bundles import BundleCache
from pyspire.server.federation.documents import bundle_to_record, record_to_bundle
from pyspire.server.federation.fetch import FetchError
from pyspire.server.federation.refresher import BundleRefresher, UnknownRelationship, refresh_interval
from pyspire.spiffe import Bundle, TrustDomain

from tests.server.federation.test_bundle_endpoint import ENDPOINT_ID, PARTNER, RunningEndpoint
from tests.support.pki import Issued, make_ca, make_leaf


@pytest.fixture
def datastore(tmp_path: Path) -> DataStore:
    handle = load_plugin(
        "server",
        "DataStore",
        "sql",
        {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.sqlite3")},
        make_core_config(tmp_path),
    )
    assert isinstance(handle, DataStore)
    return handle


@pytest.fixture
def partner_ca() -> Issued:
    return make_ca("partner.org", name="partner CA")


@pytest.fixture
def endpoint(partner_ca: Issued) -> Iterator[RunningEndpoint]:
    running = RunningEndpoint(make_leaf(partner_ca, str(ENDPOINT_ID)), Bundle(PARTNER, [partner_ca.certificate]))
    yield running
    running.close()


def refresher_for(datastore: DataStore, static: dict[TrustDomain, FederationRelationship]) -> BundleRefresher:
    bundles = BundleCache()
    for record in datastore.list_bundles()[0]:
        bundles.put(record)

    async def wrote() -> None:  # what the server's follower does after a write
        for record in datastore.list_bundles()[0]:
            bundles.put(record)

    return BundleRefresher(datastore, bundles, static, wrote)


def relationship(url: str) -> FederationRelationship:
    return FederationRelationship(PARTNER, url, "https_spiffe", ENDPOINT_ID)


def test_a_fetched_bundle_is_stored(datastore: DataStore, endpoint: RunningEndpoint, partner_ca: Issued) -> None:
    datastore.set_bundle(bundle_to_record(Bundle(PARTNER, [partner_ca.certificate])))  # seeded, as https_spiffe needs
    new_ca = make_ca("partner.org", name="next partner CA")
    assert endpoint.bundle is not None
    endpoint.bundle = endpoint.bundle.with_x509_authority(new_ca.certificate).with_sequence_number(2)
    refresher = refresher_for(datastore, {PARTNER: relationship(endpoint.url)})
    asyncio.run(refresher.refresh(PARTNER))
    stored = datastore.fetch_bundle(PARTNER)
    assert stored is not None
    assert record_to_bundle(stored) == endpoint.bundle


def test_an_older_sequence_is_not_stored(datastore: DataStore, endpoint: RunningEndpoint, partner_ca: Issued) -> None:
    held = Bundle(PARTNER, [partner_ca.certificate], sequence_number=9)
    datastore.set_bundle(bundle_to_record(held))
    assert endpoint.bundle is not None
    endpoint.bundle = endpoint.bundle.with_x509_authority(make_ca("partner.org").certificate).with_sequence_number(3)
    refresher = refresher_for(datastore, {PARTNER: relationship(endpoint.url)})
    with pytest.raises(FetchError, match="served sequence 3, older than the 9 held"):
        asyncio.run(refresher.refresh(PARTNER))
    stored = datastore.fetch_bundle(PARTNER)
    assert stored is not None
    assert record_to_bundle(stored) == held


def test_api_relationships_are_used_and_config_overrides_them(
    datastore: DataStore, endpoint: RunningEndpoint, partner_ca: Issued
) -> None:
    datastore.set_bundle(bundle_to_record(Bundle(PARTNER, [partner_ca.certificate])))
    datastore.create_federation_relationship(relationship("https://127.0.0.1:1/unreachable"))
    with pytest.raises(FetchError, match=r"127\.0\.0\.1:1/"):
        asyncio.run(refresher_for(datastore, {}).refresh(PARTNER))
    refresher = refresher_for(datastore, {PARTNER: relationship(endpoint.url)})
    assert asyncio.run(refresher.relationships())[PARTNER].bundle_endpoint_url == endpoint.url
    asyncio.run(refresher.refresh(PARTNER))
    with pytest.raises(UnknownRelationship):
        asyncio.run(refresher.refresh(TrustDomain.parse("stranger.org")))


def test_a_failed_refresh_keeps_the_bundle_held(
    datastore: DataStore, endpoint: RunningEndpoint, partner_ca: Issued
) -> None:
    held = Bundle(PARTNER, [partner_ca.certificate], sequence_number=0)
    datastore.set_bundle(bundle_to_record(held))
    url = endpoint.url
    endpoint.close()
    with pytest.raises(FetchError):
        asyncio.run(refresher_for(datastore, {PARTNER: relationship(url)}).refresh(PARTNER))
    stored = datastore.fetch_bundle(PARTNER)
    assert stored is not None
    assert record_to_bundle(stored) == held


def test_refresh_interval_follows_the_hint_within_bounds() -> None:
    assert refresh_interval(None) == 300
    assert refresh_interval(timedelta(seconds=5)) == 60
    assert refresh_interval(timedelta(minutes=30)) == 1800
