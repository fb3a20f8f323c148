"""gcp_kms's periodic upkeep against the fake Cloud KMS: keys in use are stamped, other servers' stale keys go."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.cloud import kms as cloud_kms
from google.oauth2 import service_account
from pyspire.plugin import KeyType
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.logger import plugin_logger
from pyspire.plugin.testing.loading import load_plugin, make_core_config
from pyspire_gcp_kms.upkeep import LABEL_LAST_UPDATE, Upkeep

from plugins.gcp_kms.tests.conftest import KEY_RING
from tests.support.gcp_kms import FakeKms

TD_HASH = hashlib.sha1(b"example.org", usedforsecurity=False).hexdigest()


@pytest.fixture
def client(kms: FakeKms, gcp_plugin_data: dict[str, Any]) -> Iterator[cloud_kms.KeyManagementServiceClient]:
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        gcp_plugin_data["service_account_file"], scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    made = cloud_kms.KeyManagementServiceClient(
        credentials=credentials, transport="rest", client_options=ClientOptions(api_endpoint=kms.url)
    )
    yield made
    made.transport.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def server_with_keys(gcp_plugin_data: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    """Load gcp_kms as a server with a fresh ID and give it one key; returns the server ID."""
    loaded: list[KeyManager] = []

    def _server() -> str:
        server_id = f"server-{uuid.uuid4().hex[:12]}"
        data = {**gcp_plugin_data, "key_identifier_file": "", "key_identifier_value": server_id}
        handle = load_plugin("server", "KeyManager", "gcp_kms", data, make_core_config(tmp_path / "data"))
        assert isinstance(handle, KeyManager)
        loaded.append(handle)
        handle.generate_key("x509-CA-A", KeyType.EC_P256)
        return server_id

    yield _server
    for handle in loaded:
        handle.close()


def keys_of(kms: FakeKms, server_id: str) -> list[Any]:
    return [key for key in kms.keys.values() if key.labels.get("spire-server-id") == server_id]


def upkeep_of(client: Any, server_id: str, crypto_keys: list[str], **periods: timedelta) -> Upkeep:
    def destroy(version: str) -> None:
        client.destroy_crypto_key_version(request={"name": version})

    labels = {"spire-server-td": TD_HASH, "spire-server-id": server_id, "spire-active": "true"}
    return Upkeep(
        client,
        KEY_RING,
        labels=labels,
        crypto_keys=lambda: crypto_keys,
        destroy=destroy,
        errors=(api_exceptions.GoogleAPIError,),
        log=plugin_logger("KeyManager", "gcp_kms"),
        **periods,
    )


def test_keys_in_use_are_stamped_with_their_last_update_and_keep_their_labels(
    kms: FakeKms, client: Any, server_with_keys: Any
) -> None:
    server_id = server_with_keys()
    [key] = keys_of(kms, server_id)
    now = datetime(2030, 5, 1, tzinfo=UTC)
    upkeep_of(client, server_id, [key.name]).keep_active(now)
    assert key.labels[LABEL_LAST_UPDATE] == str(int(now.timestamp()))
    assert key.labels["spire-server-id"] == server_id
    assert key.labels["spire-active"] == "true"


def test_another_servers_key_is_disposed_of_after_two_weeks_without_update(
    kms: FakeKms, client: Any, server_with_keys: Any
) -> None:
    other, this = server_with_keys(), server_with_keys()
    [other_key], [own_key] = keys_of(kms, other), keys_of(kms, this)
    stamped = datetime.now(UTC)
    upkeep_of(client, other, [other_key.name]).keep_active(stamped)
    upkeep_of(client, this, [own_key.name]).keep_active(stamped)
    mine = upkeep_of(client, this, [own_key.name])

    mine.dispose_stale(stamped + timedelta(days=13))
    assert [version.state for version in other_key.versions] == ["ENABLED"]

    mine.dispose_stale(stamped + timedelta(days=15))
    assert [version.state for version in other_key.versions] == ["DESTROY_SCHEDULED"]
    assert [version.state for version in own_key.versions] == ["ENABLED"]  # its own stale key is never disposed of
    assert other_key.labels["spire-active"] == "true"

    mine.dispose_stale(stamped + timedelta(days=15))  # nothing enabled left: labelled inactive, not found again
    assert other_key.labels["spire-active"] == "false"


def test_the_upkeep_thread_runs_each_round_at_its_period(kms: FakeKms, client: Any, server_with_keys: Any) -> None:
    server_id = server_with_keys()
    [key] = keys_of(kms, server_id)
    upkeep = upkeep_of(
        client, server_id, [key.name], keep_active_every=timedelta(seconds=0.2), dispose_every=timedelta(hours=1)
    )
    upkeep.start()
    try:
        deadline = time.monotonic() + 10
        while LABEL_LAST_UPDATE not in key.labels and time.monotonic() < deadline:
            time.sleep(0.05)
        assert abs(int(key.labels[LABEL_LAST_UPDATE]) - time.time()) < 30
    finally:
        started = time.monotonic()
        upkeep.stop()
        assert time.monotonic() - started < 5  # stop wakes the waiting thread rather than outwaiting the hour
